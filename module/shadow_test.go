package module

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

const (
	servingPolicy   = "package gatehouse\n\ndecision := {\"allow\": true}\n"
	candidateDenies = "package gatehouse\n\ndefault decision := {\"allow\": true}\n\ndecision := {\"allow\": false, \"reason\": \"admin is closed\"} if startswith(input.request.path_lower, \"/admin\")\n"
)

func policyDir(t *testing.T, policy string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPolicyShadowRefusesBadConfig(t *testing.T) {
	broken := policyDir(t, "package gatehouse\n\ndecision := {\"allow\": tru}\n")
	for _, c := range []struct {
		name   string
		change func(h *Handler)
		want   string
	}{
		{"without a policy", func(h *Handler) { h.PolicyShadow = t.TempDir() }, "gatehouse: policy_shadow: a candidate policy is decided beside the serving one: set policy too"},
		{"the policy itself", func(h *Handler) { h.Policy, h.PolicyShadow = "../policies", "../policies/" },
			"gatehouse: policy_shadow: ../policies/ is the policy directory itself"},
		{"a candidate that does not load", func(h *Handler) { h.Policy, h.PolicyShadow = "../policies", broken },
			"gatehouse: policy_shadow " + broken + ": policies: cannot load policy: p.rego:3: rego_unsafe_var_error"},
		{"an unset placeholder", func(h *Handler) { h.Policy, h.PolicyShadow = "../policies", "{env.GATEHOUSE_TEST_UNSET_S}" },
			"gatehouse: a placeholder resolved to nothing: policy_shadow {env.GATEHOUSE_TEST_UNSET_S} (set GATEHOUSE_TEST_UNSET_S)"},
	} {
		h := validHandler()
		c.change(h)
		if err := tryProvision(h); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v\nwant it to contain %q", c.name, err, c.want)
		}
	}
}

// TestPolicyShadowServes: a site whose candidate denies /admin serves
// /admin as the serving policy decides; the shadow's disagreement is an
// event line naming the request's decision and is counted by change.
func TestPolicyShadowServes(t *testing.T) {
	h := validHandler()
	h.App = "shadow-test"
	h.Policy, h.PolicyShadow = policyDir(t, servingPolicy), policyDir(t, candidateDenies)
	_, logs := provision(t, h)
	evaluated := shadowMetrics.evaluations.WithLabelValues("shadow-test")
	allowToDeny := shadowMetrics.disagreements.WithLabelValues("shadow-test", string(policies.ChangeAllowToDeny))
	cookie := sessionCookie(t, h, &authn.Session{ID: "s1", Subject: "alice", Created: time.Now().Unix() - 60, LastSeen: time.Now().Unix()})
	for _, path := range []string{"/admin/users", "/reports"} {
		r := httptest.NewRequest(http.MethodGet, "https://app.example.com"+path, nil)
		r.AddCookie(cookie)
		if w, got := serve(h, r); got == nil || w.Code != http.StatusNoContent {
			t.Fatalf("%s: %d, want the serving policy's allow", path, w.Code)
		}
	}
	waitUntil(t, "both requests decided by the candidate", func() bool { return testutil.ToFloat64(evaluated) == 2 })
	if got := testutil.ToFloat64(allowToDeny); got != 1 {
		t.Errorf("allow_to_deny counted %v, want 1", got)
	}
	events := logs.FilterMessage(gate.EventPolicyShadowDisagreed).All()
	decisions := logs.FilterMessage("decision").FilterField(zap.String("path", "/admin/users")).All()
	if len(events) != 1 || len(decisions) != 1 {
		t.Fatalf("%d disagreement events, %d decision lines for /admin/users", len(events), len(decisions))
	}
	ev, dl := events[0].ContextMap(), decisions[0].ContextMap()
	if ev["decision_id"] != dl["decision_id"] || ev["app"] != "shadow-test" || ev["path"] != "/admin/users" || dl["result"] != "allow" ||
		ev["serving_result"] != "allow" || ev["candidate_result"] != "deny" || ev["candidate_reason"] != "admin is closed" ||
		ev["serving_revision"] != dl["policy_revision"] || ev["candidate_revision"] == "" {
		t.Errorf("event %v\nfor decision %v", ev, dl)
	}
}

// TestPolicyShadowQueueFull: with the shadow's queue full and its
// workers stuck, requests are served as before and each is counted as
// dropped.
func TestPolicyShadowQueueFull(t *testing.T) {
	h := validHandler()
	h.App = "shadow-full"
	h.Policy, h.PolicyShadow = policyDir(t, servingPolicy), policyDir(t, candidateDenies)
	provision(t, h)
	shadow, err := h.policyShadow() // the pooled one the site uses
	if err != nil {
		t.Fatal(err)
	}
	stuck := stuckReporter(make(chan struct{}))
	defer close(stuck)
	// Fill it: every worker holds a job, the queue the rest.
	queued := 0
	for shadow.Submit(&policies.ShadowJob{Report: stuck}) {
		queued++
	}
	if queued < policies.DefaultShadowQueue {
		t.Fatalf("the queue took %d jobs", queued)
	}
	dropped := shadowMetrics.dropped.WithLabelValues("shadow-full")
	before := testutil.ToFloat64(dropped)
	cookie := sessionCookie(t, h, &authn.Session{ID: "s1", Subject: "alice", Created: time.Now().Unix() - 60, LastSeen: time.Now().Unix()})
	start := time.Now()
	for range 50 {
		r := httptest.NewRequest(http.MethodGet, "https://app.example.com/admin", nil)
		r.AddCookie(cookie)
		if w, got := serve(h, r); got == nil {
			t.Fatalf("%d, want the serving policy's allow", w.Code)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("50 requests took %s with the shadow's queue full", took)
	}
	// A worker may have taken a job meanwhile, leaving room for one.
	if got := testutil.ToFloat64(dropped) - before; got < 48 || got > 50 {
		t.Errorf("dropped counted %v, want about 50", got)
	}
}

// stuckReporter holds the shadow's workers until released.
type stuckReporter chan struct{}

func (s stuckReporter) ShadowDecided(*policies.ShadowJob, *policies.Revision, policies.Decision, error) {
	<-s
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPolicyDiffCommand: the command's flags, and a run on the policies
// package's crafted log.
func TestPolicyDiffCommand(t *testing.T) {
	const log, cand = "../policies/testdata/diff/audit.jsonl", "../policies/testdata/diff/candidate"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--log", log}, "--candidate and --log are required"},
		{[]string{"--candidate", cand}, "--candidate and --log are required"},
		{[]string{"--candidate", cand, "--log", log, "--format", "yaml"}, `--format "yaml": want text or json`},
		{[]string{"--candidate", t.TempDir(), "--log", log}, "--candidate: policies: cannot load policy: no .rego files"},
		{[]string{"--candidate", cand, "--log", log, "--policy-query", "data.diff_candidate.decision", "--policy", t.TempDir()}, "--policy: policies: cannot load policy"},
		{[]string{"--candidate", cand, "--log", "/nonexistent/audit.log", "--policy-query", "data.diff_candidate.decision"}, "no such file"},
	} {
		if out, err := runCommand(policyDiffCommand(), c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v\n%s\nwant an error with %q", c.args, err, out, c.want)
		}
	}
	out, err := runCommand(policyDiffCommand(), "--candidate", cand, "--log", log, "--policy-query", "data.diff_candidate.decision", "--summary")
	if err != nil || !strings.Contains(out, "changes    allow_to_deny 3, deny_to_allow 1\n") || strings.Contains(out, "  decided by") {
		t.Errorf("summary: %v\n%s", err, out)
	}
}
