package module

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

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

// TestDuplicateCookies: a request carrying one of Gatehouse's cookie names
// twice has no session, whichever copy would open: never the first, never
// the last (cookie shadowing).
func TestDuplicateCookies(t *testing.T) {
	h, logs := provision(t, validHandler())
	now := time.Now()
	alice := &authn.Session{ID: "a", Subject: "alice", Email: "alice@example.com", Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
	mallory := &authn.Session{ID: "m", Subject: "mallory", Email: "mallory@example.com", Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
	a, m := sessionCookie(t, h, alice).Value, sessionCookie(t, h, mallory).Value
	for name, cookies := range map[string][]string{
		"one header, valid first":       {"__Host-gatehouse=" + a + "; __Host-gatehouse=" + m},
		"one header, valid last":        {"__Host-gatehouse=" + m + "; __Host-gatehouse=" + a},
		"the same cookie twice":         {"__Host-gatehouse=" + a + "; __Host-gatehouse=" + a},
		"a junk copy":                   {"__Host-gatehouse=" + a + "; __Host-gatehouse=x"},
		"two headers":                   {"__Host-gatehouse=" + a, "__Host-gatehouse=" + m},
		"spaces around the name":        {"__Host-gatehouse=" + a + ";  __Host-gatehouse =" + m},
		"a tab before the name":         {"__Host-gatehouse=" + a + ";\t__Host-gatehouse=" + m},
		"ID-token cookie twice":         {"__Host-gatehouse=" + a + "; __Secure-gatehouse_idt=x; __Secure-gatehouse_idt=y"},
		"login cookie twice":            {"__Host-gatehouse=" + a + "; __Secure-gatehouse_login_0=x; __Secure-gatehouse_login_0=y"},
		"with other cookies in between": {"app=1; __Host-gatehouse=" + a + "; b=2", "c=3; __Host-gatehouse=" + m + "; d=4"},
	} {
		for _, nav := range []bool{false, true} {
			r := httptest.NewRequest(http.MethodGet, "https://app.example.com/reports", nil)
			r.Header["Cookie"] = cookies
			if nav {
				r.Header.Set("Sec-Fetch-Mode", "navigate")
				r.Header.Set("Sec-Fetch-Dest", "document")
			} else {
				r.Header.Set("Accept", "application/json")
			}
			w, got := serve(h, r)
			body := w.Body.String()
			if w.Code != http.StatusUnauthorized || got != nil || w.Header().Get("Location") != "" ||
				!(strings.Contains(body, `"reason":"duplicate_cookie"`) || strings.Contains(body, "cookie sent twice")) {
				t.Errorf("%s (navigation %v): status %d, next called %v, body %.200s", name, nav, w.Code, got != nil, w.Body)
			}
		}
	}
	if n := logs.FilterField(zap.String("reason", "duplicate_cookie")).Len(); n != 20 {
		t.Errorf("%d audit lines with duplicate_cookie, want 20", n)
	}
	// One of each is a session; other cookies that merely contain the name
	// are not duplicates.
	r := httptest.NewRequest(http.MethodGet, "https://app.example.com/reports", nil)
	r.Header["Cookie"] = []string{"x_gatehouse=1; __Host-gatehouse=" + a + "; gatehouse=2", "__Host-gatehousex=3; __Secure-gatehouse_idt=y"}
	r.Header.Set("Accept", "application/json")
	if w, got := serve(h, r); w.Code != http.StatusNoContent || got == nil {
		t.Errorf("one session cookie among look-alikes: %d", w.Code)
	}
	// At the callback, a duplicated login cookie ends the login.
	r = httptest.NewRequest(http.MethodGet, "https://app.example.com/.gatehouse/callback?state=AAAAAAAAAAAAAAAAAAAAAAAAAA&code=x", nil)
	r.Header["Cookie"] = []string{"__Secure-gatehouse_login_1=x", "__Secure-gatehouse_login_1=y"}
	if w, _ := serve(h, r); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "sign-in cookies twice") {
		t.Errorf("callback with a duplicated login cookie: %d %s", w.Code, w.Body)
	}
}
