package module

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

const testPolicy = `package gatehouse

default decision := {"allow": false, "reason": "nobody else"}

decision := {"allow": true, "headers": {"X-Role": "admin"}} if {
	"admins" in input.user.groups
	input.request.path_lower == "/"
}

decision := {"allow": true, "headers": {"X-Undeclared": "x"}} if input.request.path_lower == "/undeclared"

decision := {"allow": true, "step_up": {"acr": ["urn:mfa"], "max_age": "5m"}} if input.request.path_lower == "/stepup"

decision := {"allow": false, "reason": "ask for it", "request_grant": {"resource": "db", "max_duration": "1h"}} if input.request.path_lower == "/grant"

decision := {"allow": true, "reason": input.request.headers["user-agent"]} if input.request.path_lower == "/echo"
`

func policyHandler(t *testing.T, files map[string]string, change func(h *Handler)) (*Handler, *observer.ObservedLogs, time.Time) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(1_764_000_000, 0)
	h := validHandler()
	h.Policy = dir
	h.PolicyHeaders = []string{"X-Role"}
	h.now = func() time.Time { return now }
	if change != nil {
		change(h)
	}
	h, logs := provision(t, h)
	return h, logs, now
}

func policyRequest(t *testing.T, h *Handler, now time.Time, path string, groups ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "https://app.example.com"+path, nil)
	r.AddCookie(sessionCookie(t, h, &authn.Session{ID: "s", Subject: "alice", Email: "alice@example.com", Groups: groups,
		Created: now.Unix() - 60, LastSeen: now.Unix() - 10}))
	r.Header.Set("Accept", "application/json")
	return r
}

func TestPolicyPipeline(t *testing.T) {
	h, logs, now := policyHandler(t, map[string]string{"p.rego": testPolicy}, nil)

	// Allowed, with the decision's header, whatever the client sent.
	r := policyRequest(t, h, now, "/", "admins")
	r.Header.Set("x_role", "root")
	r.Header.Set("X-ROLE", "root")
	w, got := serve(h, r)
	if w.Code != http.StatusNoContent || got.Header["X-Role"][0] != "admin" || len(got.Header["X-Role"]) != 1 || got.Header["X_role"] != nil {
		t.Fatalf("allow: %d %v", w.Code, got.Header)
	}
	audit := logs.FilterMessage("decision").All()
	if rev := audit[len(audit)-1].ContextMap()["policy_revision"]; rev != h.engine.Current().ID {
		t.Errorf("audit policy_revision %v", rev)
	}

	// Denied by the policy: 403 with its reason, logged.
	cases := []struct {
		path, reason, msg string
	}{
		{"/", "policy_deny", "nobody else"},
		{"/undeclared", "policy_error", "could not decide"},
		{"/stepup", "acr", "needs a stronger or more recent sign-in: acr urn:mfa, within 5m0s"},
		{"/grant", "policy_deny", "ask for it"},
	}
	for _, c := range cases {
		r := policyRequest(t, h, now, c.path, "staff")
		r.Header.Set("X-Role", "root")
		w, got := serve(h, r)
		var body map[string]string
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		want := http.StatusForbidden
		if c.path == "/stepup" {
			want = http.StatusUnauthorized
		}
		if w.Code != want || got != nil || body["reason"] != c.reason || !strings.Contains(body["message"], c.msg) {
			t.Errorf("%s: %d %v", c.path, w.Code, body)
		}
	}
	entries := logs.FilterMessage("decision").All()
	last := entries[len(entries)-1].ContextMap()
	if last["policy_reason"] != "ask for it" || last["grant_offer"] != "db" || last["input"] != nil {
		t.Errorf("deny audit line: %v", last)
	}
	if errs := logs.FilterMessage("policy error: denied").All(); len(errs) != 1 || !strings.Contains(errs[0].ContextMap()["error"].(string), "X-Undeclared") {
		t.Errorf("policy error log: %v", errs)
	}
}

func TestPolicyInputAndFullDecisionLog(t *testing.T) {
	h, logs, now := policyHandler(t, map[string]string{"p.rego": testPolicy}, func(h *Handler) { h.DecisionLog = "full" })
	r := policyRequest(t, h, now, "/echo?token=s3cret&page=2")
	r.Header.Set("User-Agent", "agent/1")
	r.Header.Set("Authorization", "Bearer xyz")
	if w, _ := serve(h, r); w.Code != http.StatusNoContent {
		t.Fatalf("status %d", w.Code)
	}
	entries := logs.FilterMessage("decision").All()
	line, _ := json.Marshal(entries[len(entries)-1].ContextMap()["input"])
	var in map[string]any
	_ = json.Unmarshal(line, &in)
	req := in["request"].(map[string]any)
	if q := req["query"].(map[string]any); q["token"].([]any)[0] != "REDACTED" || q["page"].([]any)[0] != "2" {
		t.Errorf("logged query %v", q)
	}
	if hdrs := req["headers"].(map[string]any); hdrs["user-agent"] != "agent/1" || len(hdrs) != 1 {
		t.Errorf("logged headers %v", hdrs)
	}
	if strings.Contains(string(line), "s3cret") || strings.Contains(string(line), "xyz") {
		t.Errorf("a secret is in the decision log: %s", line)
	}
	user := in["user"].(map[string]any)
	if user["sub"] != "alice" || user["iss"] != h.Issuer || in["app"] != "payroll" || in["now"].(float64) != float64(now.Unix()) {
		t.Errorf("input %s", line)
	}
	if s := in["session"].(map[string]any); s["age_s"].(float64) != 60 || s["idle_s"].(float64) != 10 {
		t.Errorf("session %v", s)
	}
}

func TestPolicyRefusesBadConfig(t *testing.T) {
	for name, c := range map[string]struct {
		change func(h *Handler)
		want   string
	}{
		"invalid policy":          {func(h *Handler) {}, "gatehouse: policy"},
		"header collision":        {func(h *Handler) { h.PolicyHeaders = []string{"x_remote_user"} }, "policy_headers: x_remote_user is already"},
		"bad query":               {func(h *Handler) { h.PolicyQuery = "data..x" }, "policy_query"},
		"cookie as input":         {func(h *Handler) { h.InputHeaders = []string{"Cookie"} }, "input_headers: \"Cookie\" cannot be copied"},
		"managed header as input": {func(h *Handler) { h.InputHeaders = []string{"X-Role"} }, "input_headers: \"X-Role\" is a managed header"},
		"bad decision_log":        {func(h *Handler) { h.DecisionLog = "some" }, "decision_log"},
	} {
		h := validHandler()
		dir := t.TempDir()
		policy := testPolicy
		if name == "invalid policy" {
			policy = "package gatehouse\n\ndecision := \"yes\"\n"
		}
		_ = os.WriteFile(filepath.Join(dir, "p.rego"), []byte(policy), 0o644)
		h.Policy = dir
		h.PolicyHeaders = []string{"X-Role"}
		c.change(h)
		err := tryProvision(h)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}
