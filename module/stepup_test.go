package module

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"testing"

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

// FuzzStepUpPath checks the path pipeline as a whole: whatever the request
// path, either Gatehouse refuses it (400) or its step_up rule for /admin
// /admin/* matches exactly when the path, as an upstream would resolve it,
// is /admin or under /admin/.
func FuzzStepUpPath(f *testing.F) {
	for _, s := range []string{"/admin", "/admin/x", "/Admin/x", "//admin/x", "/x/../admin/x", "/%61dmin/x", "/admin%2fx", "/admin;x",
		"/admin.", "/adminx", "/.gatehouse/../admin", "/%2e%2e/admin", "/ADMIN%2F", "/a/b"} {
		f.Add(s)
	}
	ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
	m, err := pathMatcher(ctx, []string{"/admin", "/admin/*"})
	if err != nil {
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
		mr := r.Clone(r.Context())
		mr.URL.Path, mr.URL.RawPath = canon, ""
		got := m.MatchPath(mr)
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
