package gate

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/policies"
)

// candidatePolicy differs from testPolicy: it denies admins "/", drops
// the step-up of /stepup, gives /grant another reason, reads the query
// (which testPolicy never does), and sets an undeclared header on
// /echo.
const candidatePolicy = `package gatehouse

default decision := {"allow": false, "reason": "nobody else"}

decision := {"allow": false, "reason": "admins moved"} if input.request.path_lower == "/"

decision := {"allow": true} if input.request.path_lower == "/stepup"

decision := {"allow": false, "reason": "ask nicely", "request_grant": {"resource": "db", "max_duration": "1h"}} if input.request.path_lower == "/grant"

decision := {"allow": false, "reason": sprintf("page %s", [input.request.query.page[0]])} if input.request.path_lower == "/q"

decision := {"allow": true, "headers": {"X-Undeclared": "x"}} if input.request.path_lower == "/echo"
`

func shadowGate(t *testing.T, verdicts chan ShadowVerdict) *testGate {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(candidatePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	engine, err := policies.NewEngine(dir, policies.Options{Timeout: time.Minute}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	shadow := policies.NewShadow(engine, 16, 1)
	t.Cleanup(func() { _ = shadow.Close() })
	return policyGate(t, func(c *Config) {
		c.PolicyShadow = shadow
		c.OnShadow = func(v ShadowVerdict) { verdicts <- v }
	})
}

// TestShadowPolicy: each request keeps the serving policy's decision;
// the candidate's, decided later on the same input (the query too,
// which the serving policy never reads), is reported with the changes
// it would have made and an event line that names both sides.
func TestShadowPolicy(t *testing.T) {
	verdicts := make(chan ShadowVerdict, 16)
	tg := shadowGate(t, verdicts)
	s := tg.session()
	s.Groups = []string{"admins"}
	admin := tg.cookie(t, s)
	staff := tg.cookie(t, tg.session())

	for _, c := range []struct {
		path   string
		cookie *http.Cookie
		result Result // the serving policy's
		change policies.Change
		fields map[string]any
	}{
		{"/", admin, ResultAllow, policies.ChangeAllowToDeny, map[string]any{"serving_result": "allow", "candidate_result": "deny", "candidate_reason": "admins moved"}},
		{"/stepup", staff, ResultStepUpRequired, policies.ChangeStepUpRemoved, map[string]any{"serving_step_up": "acr=urn:mfa max_age=5m0s"}},
		{"/grant", staff, ResultDeny, policies.ChangeReasonChanged, map[string]any{"serving_reason": "ask for it", "candidate_reason": "ask nicely"}},
		{"/q?page=2", staff, ResultDeny, policies.ChangeReasonChanged, map[string]any{"candidate_reason": "page 2", "path": "/q", "method": "GET", "user": "alice"}},
		{"/echo", staff, ResultDeny, policies.ChangeCandidateError, map[string]any{"candidate_result": "error", "serving_result": "deny"}},
		{"/other", staff, ResultDeny, "", nil},
	} {
		out := tg.handle(request(http.MethodGet, c.path, false, c.cookie))
		if out.Result != c.result {
			t.Errorf("%s: %s, want the serving policy's %s", c.path, out.Result, c.result)
		}
		var v ShadowVerdict
		select {
		case v = <-verdicts:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no shadow verdict", c.path)
		}
		if c.change == "" {
			if len(v.Changes) != 0 || v.Event != nil || v.Dropped {
				t.Errorf("%s: the candidate agrees, got %+v", c.path, v)
			}
			continue
		}
		if !slices.Equal(v.Changes, []policies.Change{c.change}) || v.Event == nil || v.Event.Msg != EventPolicyShadowDisagreed {
			t.Errorf("%s: verdict %+v, want %s", c.path, v, c.change)
			continue
		}
		enc := zapcore.NewMapObjectEncoder()
		for _, f := range v.Event.Fields {
			f.AddTo(enc)
		}
		got := enc.Fields
		if got["decision_id"] != out.Audit.ID() || got["serving_revision"] != tg.cfg.Policy.Current().ID ||
			got["candidate_revision"] != tg.cfg.PolicyShadow.Engine().Current().ID || got["serving_revision"] == got["candidate_revision"] {
			t.Errorf("%s: event %v does not name the decision and both revisions", c.path, got)
		}
		for k, want := range c.fields {
			if got[k] != want {
				t.Errorf("%s: %s = %v, want %v (event %v)", c.path, k, got[k], want, got)
			}
		}
	}
}

// TestShadowDropsWhenFull: with the candidate's queue full, requests go
// on as before and each drop is reported on the request path.
func TestShadowDropsWhenFull(t *testing.T) {
	verdicts := make(chan ShadowVerdict, 64)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(candidatePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	engine, err := policies.NewEngine(dir, policies.Options{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	shadow := policies.NewShadow(engine, 1, 1)
	t.Cleanup(func() { _ = shadow.Close() })
	// A stuck worker and a full queue.
	block := &blockingReporter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	t.Cleanup(func() { close(block.release) })
	if !shadow.Submit(&policies.ShadowJob{Report: block}) {
		t.Fatal("not queued")
	}
	<-block.entered
	if !shadow.Submit(&policies.ShadowJob{Report: block}) {
		t.Fatal("not queued")
	}
	tg := policyGate(t, func(c *Config) {
		c.PolicyShadow = shadow
		c.OnShadow = func(v ShadowVerdict) { verdicts <- v }
	})
	s := tg.session()
	s.Groups = []string{"admins"}
	admin := tg.cookie(t, s)
	for range 5 {
		want(t, "admin", tg.handle(request(http.MethodGet, "/", false, admin)), Allow, 0, ResultAllow, ReasonNone)
		if v := <-verdicts; !v.Dropped {
			t.Errorf("verdict %+v, want dropped", v)
		}
	}
}

// blockingReporter says when a worker reports to it, and holds the
// worker until released.
type blockingReporter struct{ entered, release chan struct{} }

func (b *blockingReporter) ShadowDecided(*policies.ShadowJob, *policies.Revision, policies.Decision, error) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.release
}
