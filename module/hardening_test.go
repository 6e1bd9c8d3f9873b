package module

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// TestRawTargetIsCheckedBeforeRewrites: the request target as the client
// sent it is checked before dot segments are resolved, even when a rewrite
// in front of Gatehouse has already turned it into a clean path.
func TestRawTargetIsCheckedBeforeRewrites(t *testing.T) {
	h, _ := provision(t, validHandler())
	now := time.Now()
	sess := &authn.Session{ID: "s", Subject: "alice", Email: "alice@example.com", Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
	cookie := sessionCookie(t, h, sess)
	for _, c := range []struct {
		raw, rewritten string
		want           int
	}{
		{"/public;/../admin", "/admin", http.StatusBadRequest},
		{"/x/%c0%ae%c0%ae/admin", "/admin", http.StatusBadRequest},
		{"/x/%c0%ae%c0%ae/admin", "", http.StatusBadRequest},
		{"/x/%e0%80%ae%e0%80%ae/admin", "", http.StatusBadRequest},
		{"/x/%c2%85/admin", "", http.StatusBadRequest},
		{"/x/..%5cadmin", "/admin", http.StatusBadRequest},
		{"https://app.example.com/a;/../admin", "/admin", http.StatusBadRequest},
		{"/app/reports?q=;%2f", "/reports", http.StatusNoContent}, // the query is not a path
		{"/app/caf%C3%A9", "/caf%C3%A9", http.StatusNoContent},
	} {
		r := httptest.NewRequest(http.MethodGet, "https://app.example.com/", nil)
		r.RequestURI = c.raw
		orig := *r
		if c.rewritten != "" {
			u, _ := r.URL.Parse(c.rewritten)
			r.URL = u
			r.RequestURI = u.RequestURI()
		} else {
			u, _ := r.URL.Parse(c.raw)
			r.URL = u
		}
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.OriginalRequestCtxKey, orig))
		r.AddCookie(cookie)
		r.Header.Set("Accept", "application/json")
		w, got := serve(h, r)
		if w.Code != c.want || (c.want >= 400) != (got == nil) {
			t.Errorf("%s (served as %q): status %d, next called %v; want %d", c.raw, c.rewritten, w.Code, got != nil, c.want)
		}
	}
}
