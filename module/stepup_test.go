package module

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

func TestStepUpValidation(t *testing.T) {
	cases := map[string]struct {
		change func(h *Handler)
		want   string
	}{
		"unknown provider": {func(h *Handler) {
			h.StepUp = []StepUpRule{{Paths: []string{"/x"}, Provider: "eid"}}
		}, "step_up: rule #1 (/x): provider \"eid\" is not configured"},
		"disjoint acr on overlapping paths": {func(h *Handler) {
			h.StepUp = []StepUpRule{{Paths: []string{"/admin/*"}, ACR: []string{"a"}}, {Paths: []string{"/admin/users"}, ACR: []string{"b"}}}
		}, "accept no acr in common"},
		"provider without link": {func(h *Handler) {
			h.Providers = map[string]*Provider{"eid": {Issuer: "https://eid.example", ClientID: "c"}}
		}, "provider: eid: link_claim is required"},
		"provider over http": {func(h *Handler) {
			h.Providers = map[string]*Provider{"eid": {Issuer: "http://eid.example", ClientID: "c", LinkClaim: "email"}}
		}, "provider: eid: issuer: \"http://eid.example\" must use https"},
	}
	for name, c := range cases {
		h := validHandler()
		c.change(h)
		if err := tryProvision(h); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
	// Disjoint sets on paths that never meet are fine.
	h := validHandler()
	h.StepUp = []StepUpRule{{Paths: []string{"/admin/*"}, ACR: []string{"a"}}, {Paths: []string{"/payroll/*"}, ACR: []string{"b"}}}
	if err := tryProvision(h); err != nil {
		t.Errorf("separate paths: %v", err)
	}
}

func TestStepUpPipeline(t *testing.T) {
	now := time.Unix(1_764_000_000, 0)
	h := validHandler()
	h.now = func() time.Time { return now }
	h.StepUp = []StepUpRule{{Paths: []string{"/admin", "/admin/*"}, ACR: []string{"urn:mfa"}, MaxAge: caddy.Duration(5 * time.Minute)}}
	h, logs := provision(t, h)
	pwd := &authn.Session{ID: "s", Subject: "alice", ACR: "urn:pwd", AuthTime: now.Unix() - 600, Created: now.Unix() - 600, LastSeen: now.Unix() - 5}
	fresh := &authn.Session{ID: "s", Subject: "alice", ACR: "urn:mfa", AuthTime: now.Unix() - 60, Created: now.Unix() - 600, LastSeen: now.Unix() - 5}
	stale := &authn.Session{ID: "s", Subject: "alice", ACR: "urn:mfa", AuthTime: now.Unix() - 306, Created: now.Unix() - 600, LastSeen: now.Unix() - 5}
	get := func(s *authn.Session, path, method string) (*httptest.ResponseRecorder, *http.Request) {
		r := httptest.NewRequest(method, "https://app.example.com"+path, nil)
		r.AddCookie(sessionCookie(t, h, s))
		r.Header.Set("Accept", "application/json")
		return serve(h, r)
	}
	for _, p := range []string{"/admin", "/admin/", "/Admin/x", "//admin/x", "/x/../admin/x", "/%61dmin/x", "/ADMIN/%2e/x"} {
		w, got := get(pwd, p, http.MethodGet)
		var body map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != http.StatusUnauthorized || got != nil || body["error"] != "step_up_required" || body["reason"] != "acr" ||
			!strings.HasPrefix(body["step_up_url"].(string), "/.gatehouse/stepup?rd=") {
			t.Errorf("%s with a password session: %d %v", p, w.Code, body)
		}
	}
	if w, _ := get(pwd, "/adminx", http.MethodGet); w.Code != http.StatusNoContent {
		t.Errorf("/adminx is not sensitive: %d", w.Code)
	}
	if w, _ := get(fresh, "/admin/x", http.MethodGet); w.Code != http.StatusNoContent {
		t.Errorf("fresh MFA: %d %s", w.Code, w.Body)
	}
	w, _ := get(stale, "/admin/x", http.MethodPost)
	var body map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	req, _ := body["requirement"].(map[string]any)
	if w.Code != http.StatusUnauthorized || body["reason"] != "max_age" || req["max_age"] != "5m0s" || req["acr"].([]any)[0] != "urn:mfa" {
		t.Errorf("stale MFA POST: %d %v", w.Code, body)
	}
	found := false
	for _, e := range logs.FilterMessage("decision").All() {
		if e.ContextMap()["result"] == "step_up_required" && e.ContextMap()["reason"] == "step_up_max_age" {
			found = true
		}
	}
	if !found {
		t.Error("no audit line for the step-up requirement")
	}
}

// FuzzStepUpPath checks the path pipeline as a whole: whatever the request
// path, either Gatehouse refuses it (400) or its step_up rule for /admin
// /admin/* matches exactly when the path, as an upstream would resolve it,
// is /admin or under /admin/.
func FuzzStepUpPath(f *testing.F) {
	for _, s := range []string{"/admin", "/admin/x", "/Admin/x", "//admin/x", "/x/../admin/x", "/%61dmin/x", "/admin%2fx", "/admin;x",
		"/admin.", "/adminx", "/.gatehouse/../admin", "/%2e%2e/admin", "/ADMIN%2F", "/a/b"} {
		f.Add(s)
	}
	h := validHandler()
	h.StepUp = []StepUpRule{{Paths: []string{"/admin", "/admin/*"}, ACR: []string{"mfa"}}}
	if err := tryProvisionKeep(h); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil || u.Host != "" || u.Scheme != "" {
			return
		}
		canon, err := authn.CanonicalPath(u.EscapedPath())
		if err != nil {
			return // refused with 400
		}
		r := httptest.NewRequest(http.MethodGet, "https://app.example.com/", nil)
		r.URL = u
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		got := h.stepUps[0].match.Match(matchable(r, canon))
		// How an upstream resolves it: decode, clean, compare lowercase.
		dec, err := url.PathUnescape(u.EscapedPath())
		if err != nil {
			return
		}
		clean := strings.ToLower(path.Clean("/" + dec))
		want := clean == "/admin" || strings.HasPrefix(clean, "/admin/")
		if got != want {
			t.Fatalf("%q (canonical %q, upstream %q): matched %v, want %v", raw, canon, clean, got, want)
		}
	})
}
