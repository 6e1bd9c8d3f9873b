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

// TestCrossOriginUpgrade: an upgrade (WebSocket, h2c, extended CONNECT)
// from another origin never reaches the upstream (cross-site WebSocket
// hijacking); one from the site's own pages, a listed origin, or a
// non-browser client without Origin does.
func TestCrossOriginUpgrade(t *testing.T) {
	h := validHandler()
	h.UpgradeOrigins = []string{"https://partner.example.com:443"}
	h, logs := provision(t, h)
	ext := validHandler()
	ext.ExternalURL = "https://portal.example.com"
	ext, _ = provision(t, ext)
	now := time.Now()
	sess := &authn.Session{ID: "s", Subject: "alice", Email: "alice@example.com", Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
	ws := []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
	cases := []struct {
		name   string
		h      *Handler
		method string
		kv     []string
		want   int
	}{
		{"same origin", h, "GET", append([]string{"Origin", "https://app.example.com"}, ws...), http.StatusNoContent},
		{"same origin, default port written", h, "GET", append([]string{"Origin", "https://APP.example.com:443"}, ws...), http.StatusNoContent},
		{"no Origin: not a browser", h, "GET", ws, http.StatusNoContent},
		{"listed origin", h, "GET", append([]string{"Origin", "https://partner.example.com"}, ws...), http.StatusNoContent},
		{"another site", h, "GET", append([]string{"Origin", "https://evil.example"}, ws...), http.StatusForbidden},
		{"a sibling subdomain", h, "GET", append([]string{"Origin", "https://evil.example.com"}, ws...), http.StatusForbidden},
		{"same host, another port", h, "GET", append([]string{"Origin", "https://app.example.com:8443"}, ws...), http.StatusForbidden},
		{"same host over http", h, "GET", append([]string{"Origin", "http://app.example.com"}, ws...), http.StatusForbidden},
		{"Origin null", h, "GET", append([]string{"Origin", "null"}, ws...), http.StatusForbidden},
		{"empty Origin", h, "GET", append([]string{"Origin", ""}, ws...), http.StatusForbidden},
		{"two Origins, own first", h, "GET", append([]string{"Origin", "https://app.example.com", "Origin", "https://evil.example"}, ws...), http.StatusForbidden},
		{"Origin with a path", h, "GET", append([]string{"Origin", "https://app.example.com/x"}, ws...), http.StatusForbidden},
		{"Origin as a prefix", h, "GET", append([]string{"Origin", "https://app.example.com.evil.example"}, ws...), http.StatusForbidden},
		{"h2c from another site", h, "GET", []string{"Origin", "https://evil.example", "Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c"}, http.StatusForbidden},
		{"Upgrade without Connection", h, "GET", []string{"Origin", "https://evil.example", "Upgrade", "websocket"}, http.StatusForbidden},
		{"extended CONNECT from another site", h, "CONNECT", []string{"Origin", "https://evil.example", ":protocol", "websocket"}, http.StatusForbidden},
		{"a cross-origin fetch is no upgrade", h, "GET", []string{"Origin", "https://evil.example"}, http.StatusNoContent},
		{"external_url is the own origin", ext, "GET", append([]string{"Origin", "https://portal.example.com"}, ws...), http.StatusNoContent},
		{"the request's host is not, with external_url", ext, "GET", append([]string{"Origin", "https://app.example.com"}, ws...), http.StatusForbidden},
	}
	for _, c := range cases {
		r := httptest.NewRequest(c.method, "https://app.example.com/ws", nil)
		r.AddCookie(sessionCookie(t, c.h, sess))
		for i := 0; i+1 < len(c.kv); i += 2 {
			r.Header.Add(c.kv[i], c.kv[i+1])
		}
		w, got := serve(c.h, r)
		if w.Code != c.want || (got != nil) != (c.want == http.StatusNoContent) {
			t.Errorf("%s: status %d, next called %v; want %d", c.name, w.Code, got != nil, c.want)
		}
		if c.want == http.StatusForbidden && !strings.Contains(w.Body.String(), `"reason":"cross_origin_upgrade"`) {
			t.Errorf("%s: body %s", c.name, w.Body)
		}
	}
	// 12 refusals by h (the 13th is ext's, in its own log).
	if n := logs.FilterField(zap.String("reason", "cross_origin_upgrade")).Len(); n != 12 {
		t.Errorf("%d audit lines with cross_origin_upgrade, want 12", n)
	}
}

// FuzzDuplicateCookies: whenever Go's cookie reader (the one that opens
// the session) sees the session cookie more than once, the request is
// refused as a duplicate: no header a client sends lets one copy shadow
// another.
func FuzzDuplicateCookies(f *testing.F) {
	h := cookieHandler()
	f.Add("__Host-gatehouse=a; __Host-gatehouse=b", "")
	f.Add("__Host-gatehouse=a", "__Host-gatehouse=b")
	f.Add("__Host-gatehouse=a;__Host-gatehouse =b", "x=1")
	f.Add(" __Host-gatehouse=\"a\"; \t__Host-gatehouse=b", "")
	f.Add("__Secure-gatehouse_idt=a", "__Secure-gatehouse_idt=b; __Host-gatehouse=c")
	f.Fuzz(func(t *testing.T, c1, c2 string) {
		r := httptest.NewRequest(http.MethodGet, "https://app.example/", nil)
		r.Header["Cookie"] = []string{c1, c2}
		if len(r.CookiesNamed("__Host-gatehouse")) > 1 && !h.duplicateOwnCookie(r) {
			t.Fatalf("Go reads two session cookies in %q %q, but no duplicate was seen", c1, c2)
		}
		if len(r.CookiesNamed("__Secure-gatehouse_idt")) > 1 && !h.duplicateOwnCookie(r) {
			t.Fatalf("Go reads two ID-token cookies in %q %q, but no duplicate was seen", c1, c2)
		}
	})
}
