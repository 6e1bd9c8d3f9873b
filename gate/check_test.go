package gate

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

func TestCheckAllows(t *testing.T) {
	tg := newTestGate(t, nil)
	sess := tg.session()
	sess.Groups = []string{"staff", "a,b"}
	sess.LastSeen = tg.clock.now().Unix() - 30
	sess.Extra = map[string]string{"department": "Payroll\r\nX-Injected: 1"}
	c := tg.cookie(t, sess)

	r := request(http.MethodGet, "/reports", true, c)
	r.Header["X-Remote-User"] = []string{"mallory"}
	r.Header["X_Remote_Groups"] = []string{"admins"}
	r.Header.Set("Connection", "X-Remote-User")
	out := tg.handle(r)
	want(t, "a live session", out, Allow, 0, ResultAllow, ReasonNone)
	for name, v := range map[string]string{"X-Remote-User": "alice@example.com", "X-Remote-Groups": "staff,a%2Cb", "X-Department": "PayrollX-Injected: 1"} {
		if got, _ := out.upstream(name); got != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
	}
	for k := range r.Header {
		if strings.Contains(k, "_") || k == "X-Remote-User" {
			t.Errorf("the client's %s is still on the request", k)
		}
	}
	if r.Header.Get("Connection") != "" {
		t.Errorf("Connection still names a managed header: %q", r.Header.Get("Connection"))
	}
	if len(out.Cookies) != 0 {
		t.Error("the cookie was re-issued 30s after the last slide")
	}
	if out.Audit.User != "alice" || out.Audit.Email != "alice@example.com" || out.Audit.Path != "/reports" || out.Audit.ID() == "" {
		t.Errorf("audit %+v", out.Audit)
	}

	// A minute later, a navigation slides the idle clock; a fetch and an
	// idle_ignore path do not.
	tg.clock.add(31 * time.Second)
	if out := tg.handle(request(http.MethodGet, "/api", false, c)); out.Kind != Allow || len(out.Cookies) != 0 {
		t.Errorf("a background fetch slid the idle clock: %+v", out.Cookies)
	}
	if out := tg.handle(request(http.MethodGet, "/poll", true, c)); out.Kind != Allow || len(out.Cookies) != 0 {
		t.Error("an idle_ignore path slid the idle clock")
	}
	out = tg.handle(request(http.MethodGet, "/page", true, c))
	set := out.cookie("__Host-gatehouse")
	if out.Kind != Allow || set == nil || !set.Secure || !set.HttpOnly || set.SameSite != http.SameSiteLaxMode || set.Path != "/" {
		t.Fatalf("navigation after a minute: cookies %+v", out.Cookies)
	}
	var slid authn.Session
	if err := tg.cookies.openSession(set.Value, &slid); err != nil || slid.LastSeen != tg.clock.now().Unix() || slid.ID != "s1" {
		t.Errorf("re-issued session %+v, %v", slid, err)
	}

	// After the idle timeout, the old cookie no longer works.
	tg.clock.add(15 * time.Minute)
	out = tg.handle(request(http.MethodGet, "/api", false, c))
	want(t, "an idle session", out, Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonIdle))
	if out.Answer == nil || out.Answer.Error != "unauthenticated" || out.Answer.LoginURL != "/.gatehouse/login?rd=%2Fapi" {
		t.Errorf("401 answer %+v", out.Answer)
	}
}

func TestCheckWithoutSession(t *testing.T) {
	tg := newTestGate(t, nil)
	// Public paths pass, stripped, without a session.
	r := request(http.MethodGet, "/static/app.css", false)
	r.Header.Set("X-Remote-User", "mallory")
	out := tg.handle(r)
	want(t, "public path", out, Allow, 0, ResultPublic, ReasonNone)
	if r.Header.Get("X-Remote-User") != "" || len(out.Upstream) != 0 {
		t.Errorf("public path: X-Remote-User %q, upstream %v", r.Header.Get("X-Remote-User"), out.Upstream)
	}
	// ...but not by a path trick.
	for _, p := range []string{"/static/../admin", "/STATIC/../admin", "/static/%2e%2e/admin"} {
		want(t, p, tg.handle(request(http.MethodGet, p, false)), Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonNoCookie))
	}
	// A navigation goes to the IdP with a fresh sign-in slot.
	out = tg.handle(request(http.MethodGet, "/x?y=1", true))
	want(t, "navigation", out, Login, http.StatusFound, ResultLogin, Reason(authn.ReasonNoCookie))
	if !strings.HasPrefix(out.Location, tg.idp.URL+"/auth?") || !strings.Contains(out.Location, "max_age=43200") ||
		len(out.Cookies) != 1 || !strings.HasPrefix(out.Cookies[0].Name, "__Secure-gatehouse_login_") || out.Cookies[0].Path != "/.gatehouse/" ||
		out.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("sign-in start: %s %+v %v", out.Location, out.Cookies, out.Header)
	}
	// Plain HTTP on a public host is refused before any sign-in starts.
	r = request(http.MethodGet, "/x", true)
	r.URL.Scheme, r.TLS = "http", nil
	want(t, "plain HTTP", tg.handle(r), BadRequest, http.StatusBadRequest, ResultReject, ReasonHTTPSRequired)

	// With the IdP unreachable, a clear 502 that leaks nothing.
	down := newTestGate(t, func(c *Config) {
		c.Issuer = "https://idp.invalid"
		c.IdP.Discovery = authn.NewDiscovery(c.Issuer, &http.Client{Timeout: time.Second})
	})
	out = down.handle(request(http.MethodGet, "/x", true))
	want(t, "IdP down", out, Unavailable, http.StatusBadGateway, ResultError, ReasonIdPUnavailable)
	b, _ := json.Marshal(out.Answer)
	for _, leak := range []string{"idp.invalid", "dial", "lookup", "discovery", "authn:"} {
		if strings.Contains(strings.ToLower(string(b)), leak) {
			t.Errorf("the answer leaks %q: %s", leak, b)
		}
	}
	if down.logs.FilterMessage("identity provider unavailable").Len() != 1 {
		t.Error("the outage is not in the log")
	}
}

// TestRawTargetIsCheckedBeforeRewrites: the request-target as the client
// sent it is checked before dot segments are resolved, even when a
// rewrite in front of the gate has already turned it into a clean path.
func TestRawTargetIsCheckedBeforeRewrites(t *testing.T) {
	tg := newTestGate(t, nil)
	c := tg.cookie(t, tg.session())
	for _, tc := range []struct {
		raw, served string
		kind        Kind
	}{
		{"/public;/../admin", "/admin", BadRequest},
		{"/x/%c0%ae%c0%ae/admin", "/admin", BadRequest},
		{"/x/%c0%ae%c0%ae/admin", "", BadRequest},
		{"/x/%e0%80%ae%e0%80%ae/admin", "", BadRequest},
		{"/x/%c2%85/admin", "", BadRequest},
		{"/x/..%5cadmin", "/admin", BadRequest},
		{"https://app.example.com/a;/../admin", "/admin", BadRequest},
		{"/app/reports?q=;%2f", "/reports", Allow}, // the query is not a path
		{"/app/caf%C3%A9", "/caf%C3%A9", Allow},
	} {
		served := tc.served
		if served == "" {
			served = tc.raw
		}
		r := request(http.MethodGet, "/", false, c)
		u, _ := r.URL.Parse(served)
		r.URL, r.RequestURI = u, u.RequestURI()
		tg.Strip(r)
		out := tg.Handle(&Request{HTTP: r, Target: tc.raw, Start: tg.clock.now()})
		if out.Kind != tc.kind || (tc.kind == BadRequest && out.Reason != ReasonAmbiguousPath) {
			t.Errorf("%s (served as %q): %s %s", tc.raw, tc.served, out.Kind, out.Reason)
		}
	}
}

// TestDuplicateCookies: a request carrying one of Gatehouse's cookie names
// twice has no session, whichever copy would open: never the first, never
// the last (cookie shadowing).
func TestDuplicateCookies(t *testing.T) {
	tg := newTestGate(t, nil)
	mallory := tg.session()
	mallory.ID, mallory.Subject, mallory.Email = "m", "mallory", "mallory@example.com"
	a, m := tg.cookie(t, tg.session()).Value, tg.cookie(t, mallory).Value
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
			r := request(http.MethodGet, "/reports", nav)
			r.Header["Cookie"] = cookies
			out := tg.handle(r)
			want(t, name, out, Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonDuplicate))
			if out.Location != "" || out.Answer == nil || out.Answer.Title != "Sign-in cookie sent twice" {
				t.Errorf("%s (navigation %v): %q %+v", name, nav, out.Location, out.Answer)
			}
		}
	}
	// One of each is a session; other cookies that merely contain the name
	// are not duplicates.
	r := request(http.MethodGet, "/reports", false)
	r.Header["Cookie"] = []string{"x_gatehouse=1; __Host-gatehouse=" + a + "; gatehouse=2", "__Host-gatehousex=3; __Secure-gatehouse_idt=y"}
	want(t, "one session cookie among look-alikes", tg.handle(r), Allow, 0, ResultAllow, ReasonNone)
	// At the callback, a duplicated sign-in cookie ends the sign-in.
	r = request(http.MethodGet, "/.gatehouse/callback?state=AAAAAAAAAAAAAAAAAAAAAAAAAA&code=x", true)
	r.Header["Cookie"] = []string{"__Secure-gatehouse_login_1=x", "__Secure-gatehouse_login_1=y"}
	out := tg.handle(r)
	want(t, "callback with a duplicated sign-in cookie", out, Deny, http.StatusBadRequest, ResultLoginFailed, Reason(authn.ReasonDuplicate))
	if !strings.Contains(out.Answer.Message, "sign-in cookies twice") {
		t.Errorf("message %q", out.Answer.Message)
	}
}

// FuzzDuplicateCookies: whenever Go's cookie reader (the one that opens
// the session) sees the session cookie more than once, the request is
// refused as a duplicate: no header a client sends lets one copy shadow
// another.
func FuzzDuplicateCookies(f *testing.F) {
	jar := testCookies()
	f.Add("__Host-gatehouse=a; __Host-gatehouse=b", "")
	f.Add("__Host-gatehouse=a", "__Host-gatehouse=b")
	f.Add("__Host-gatehouse=a;__Host-gatehouse =b", "x=1")
	f.Add(" __Host-gatehouse=\"a\"; \t__Host-gatehouse=b", "")
	f.Add("__Secure-gatehouse_idt=a", "__Secure-gatehouse_idt=b; __Host-gatehouse=c")
	f.Fuzz(func(t *testing.T, c1, c2 string) {
		r := httptest.NewRequest(http.MethodGet, "https://app.example/", nil)
		r.Header["Cookie"] = []string{c1, c2}
		if len(r.CookiesNamed("__Host-gatehouse")) > 1 && !jar.duplicate(r) {
			t.Fatalf("Go reads two session cookies in %q %q, but no duplicate was seen", c1, c2)
		}
		if len(r.CookiesNamed("__Secure-gatehouse_idt")) > 1 && !jar.duplicate(r) {
			t.Fatalf("Go reads two ID-token cookies in %q %q, but no duplicate was seen", c1, c2)
		}
	})
}

// TestCrossOriginUpgrade: an upgrade (WebSocket, h2c, extended CONNECT)
// from another origin never reaches the upstream (cross-site WebSocket
// hijacking); one from the site's own pages, a listed origin, or a
// non-browser client without Origin does.
func TestCrossOriginUpgrade(t *testing.T) {
	own := newTestGate(t, func(c *Config) { c.UpgradeOrigins = []string{"https://partner.example.com:443"} })
	ext := newTestGate(t, func(c *Config) { c.ExternalURL = "https://portal.example.com" })
	ws := []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
	cases := []struct {
		name   string
		g      *testGate
		method string
		kv     []string
		ok     bool
	}{
		{"same origin", own, "GET", append([]string{"Origin", "https://app.example.com"}, ws...), true},
		{"same origin, default port written", own, "GET", append([]string{"Origin", "https://APP.example.com:443"}, ws...), true},
		{"no Origin: not a browser", own, "GET", ws, true},
		{"listed origin", own, "GET", append([]string{"Origin", "https://partner.example.com"}, ws...), true},
		{"another site", own, "GET", append([]string{"Origin", "https://evil.example"}, ws...), false},
		{"a sibling subdomain", own, "GET", append([]string{"Origin", "https://evil.example.com"}, ws...), false},
		{"same host, another port", own, "GET", append([]string{"Origin", "https://app.example.com:8443"}, ws...), false},
		{"same host over http", own, "GET", append([]string{"Origin", "http://app.example.com"}, ws...), false},
		{"Origin null", own, "GET", append([]string{"Origin", "null"}, ws...), false},
		{"empty Origin", own, "GET", append([]string{"Origin", ""}, ws...), false},
		{"two Origins, own first", own, "GET", append([]string{"Origin", "https://app.example.com", "Origin", "https://evil.example"}, ws...), false},
		{"Origin with a path", own, "GET", append([]string{"Origin", "https://app.example.com/x"}, ws...), false},
		{"Origin as a prefix", own, "GET", append([]string{"Origin", "https://app.example.com.evil.example"}, ws...), false},
		{"h2c from another site", own, "GET", []string{"Origin", "https://evil.example", "Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c"}, false},
		{"Upgrade without Connection", own, "GET", []string{"Origin", "https://evil.example", "Upgrade", "websocket"}, false},
		{"extended CONNECT from another site", own, "CONNECT", []string{"Origin", "https://evil.example", ":protocol", "websocket"}, false},
		{"a cross-origin fetch is no upgrade", own, "GET", []string{"Origin", "https://evil.example"}, true},
		{"external_url is the own origin", ext, "GET", append([]string{"Origin", "https://portal.example.com"}, ws...), true},
		{"the request's host is not, with external_url", ext, "GET", append([]string{"Origin", "https://app.example.com"}, ws...), false},
	}
	for _, c := range cases {
		r := request(c.method, "/ws", false, c.g.cookie(t, c.g.session()))
		for i := 0; i+1 < len(c.kv); i += 2 {
			r.Header.Add(c.kv[i], c.kv[i+1])
		}
		out := c.g.handle(r)
		if c.ok {
			want(t, c.name, out, Allow, 0, ResultAllow, ReasonNone)
		} else {
			want(t, c.name, out, Deny, http.StatusForbidden, ResultDeny, ReasonCrossOriginUpgrade)
		}
	}
}

func TestAllowRules(t *testing.T) {
	tg := newTestGate(t, func(c *Config) {
		c.AllowGroups = []string{"payroll"}
		c.AllowEmailDomains = []string{"@Partner.example"}
	})
	for _, c := range []struct {
		email  string
		groups []string
		ok     bool
	}{
		{"alice@example.com", []string{"staff"}, false},
		{"alice@example.com", []string{"staff", "payroll"}, true},
		{"bob@partner.example", nil, true},
		{"bob@PARTNER.EXAMPLE", nil, true},
		{"bob@sub.partner.example", nil, false},
		{"partner.example@evil.example", nil, false},
	} {
		s := tg.session()
		s.Email, s.Groups = c.email, c.groups
		out := tg.handle(request(http.MethodGet, "/x", false, tg.cookie(t, s)))
		if c.ok {
			want(t, c.email, out, Allow, 0, ResultAllow, ReasonNone)
		} else {
			want(t, c.email, out, Deny, http.StatusForbidden, ResultDeny, ReasonNotAllowed)
		}
	}
	if tg.Everyone() || !newTestGate(t, nil).Everyone() {
		t.Error("Everyone() does not say whether every signed-in user is allowed")
	}
}

// downStore is a store whose lookups fail, as a dead Redis's do; with
// dead, loading the revocations fails too.
type downStore struct {
	grants.Store
	dead bool
}

func (downStore) Lookup(context.Context, grants.User, string, time.Time) (grants.State, error) {
	return grants.State{}, grants.ErrUnavailable
}

func (s downStore) Revocations(ctx context.Context, now time.Time) (grants.Revocations, error) {
	if s.dead {
		return grants.Revocations{}, grants.ErrUnavailable
	}
	return s.Store.Revocations(ctx, now)
}

// TestGrantStoreOutage: a node that never loaded the revocations serves
// nobody (503); while the store is down, standing access goes on and the
// log says so once, not per request; it says so again when it is back.
func TestGrantStoreOutage(t *testing.T) {
	tg := newTestGate(t, nil)
	up := tg.cfg.Grants
	cache := func(s grants.Store) *grants.Cache {
		c := grants.NewCache(s, 10*time.Millisecond)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	c := tg.cookie(t, tg.session())
	count := func(msg string) int { return tg.logs.FilterMessageSnippet(msg).Len() }

	tg.cfg.Grants = cache(downStore{tg.store, true})
	out := tg.handle(request(http.MethodGet, "/x", false, c))
	want(t, "revocations never loaded", out, Unavailable, http.StatusServiceUnavailable, ResultDeny, ReasonRevocationsDown)
	if out.Audit.User != "alice" {
		t.Errorf("a 503 that does not say whose: %+v", out.Audit)
	}
	out = tg.handle(request(http.MethodGet, "/.gatehouse/login?rd=/x", false, c))
	if out.Reason != ReasonRevocationsDown || out.Location == "/x" {
		t.Errorf("/login with unverifiable revocations: %s %q", out.Reason, out.Location)
	}

	tg.cfg.Grants = cache(downStore{tg.store, false})
	for range 5 {
		want(t, "standing access while the store is down", tg.handle(request(http.MethodGet, "/x", false, c)), Allow, 0, ResultAllow, ReasonNone)
	}
	if n := count("grant store unavailable"); n != 1 {
		t.Errorf("%d outage lines for 5 requests, want 1", n)
	}
	tg.cfg.Grants = up
	tg.handle(request(http.MethodGet, "/x", false, c))
	tg.handle(request(http.MethodGet, "/x", false, c))
	if n := count("grant store reachable again"); n != 1 {
		t.Errorf("%d recovery lines, want 1", n)
	}
}

// TestRevokedSessions: a revoked session is no session, in the pipeline
// and at Gatehouse's own endpoints: not "already signed in", and it
// cannot start a step-up.
func TestRevokedSessions(t *testing.T) {
	tg := newTestGate(t, nil)
	sess := tg.session()
	c := tg.cookie(t, sess)
	out := tg.handle(request(http.MethodGet, "/.gatehouse/login?rd=/x", true, c))
	want(t, "a live session at /login", out, Redirect, http.StatusFound, ResultInternal, ReasonAlreadySignedIn)
	if out.Location != "/x" {
		t.Fatalf("Location %q", out.Location)
	}
	tg.cfg.Grants.NoteSessionRevoked(tg.user(sess), sess.ID, tg.clock.now().Add(time.Hour))
	out = tg.handle(request(http.MethodGet, "/x", false, c))
	want(t, "a revoked session", out, Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonRevoked))
	if out.Audit.User != "" {
		t.Errorf("the revoked session's user is in the audit as if signed in: %+v", out.Audit)
	}
	for _, path := range []string{"/.gatehouse/login?rd=/x", "/.gatehouse/stepup?rd=/x"} {
		out := tg.handle(request(http.MethodGet, path, true, c))
		want(t, path, out, Login, http.StatusFound, ResultLogin, Reason(authn.ReasonRevoked))
		if !strings.HasPrefix(out.Location, tg.idp.URL+"/auth?") || !strings.Contains(out.Location, "prompt=login") {
			t.Errorf("%s: a revoked session did not start a fresh sign-in: %q", path, out.Location)
		}
	}
}

func TestStepUpRules(t *testing.T) {
	tg := newTestGate(t, func(c *Config) {
		c.StepUp = authn.StepUpRules{{Paths: globPaths{"/admin", "/admin/*"}, Requirement: authn.Requirement{ACR: []string{"urn:mfa"}, MaxAge: 5 * time.Minute}}}
	})
	now := tg.clock.now()
	session := func(acr string, age time.Duration) *http.Cookie {
		s := tg.session()
		s.ACR, s.AuthTime = acr, now.Add(-age).Unix()
		return tg.cookie(t, s)
	}
	pwd, fresh, stale := session("urn:pwd", 10*time.Minute), session("urn:mfa", time.Minute), session("urn:mfa", 306*time.Second)
	for _, p := range []string{"/admin", "/admin/", "/Admin/x", "//admin/x", "/x/../admin/x", "/%61dmin/x", "/ADMIN/%2e/x"} {
		out := tg.handle(request(http.MethodGet, p, false, pwd))
		want(t, p+" with a password session", out, StepUp, http.StatusUnauthorized, ResultStepUpRequired, ReasonStepUpACR)
		if a := out.Answer; a == nil || a.Error != "step_up_required" || a.Reason != "acr" || !strings.HasPrefix(a.StepUpURL, "/.gatehouse/stepup?rd=") {
			t.Errorf("%s: answer %+v", p, a)
		}
	}
	want(t, "/adminx is not sensitive", tg.handle(request(http.MethodGet, "/adminx", false, pwd)), Allow, 0, ResultAllow, ReasonNone)
	want(t, "fresh MFA", tg.handle(request(http.MethodGet, "/admin/x", false, fresh)), Allow, 0, ResultAllow, ReasonNone)
	out := tg.handle(request(http.MethodPost, "/admin/x", false, stale))
	want(t, "stale MFA POST", out, StepUp, http.StatusUnauthorized, ResultStepUpRequired, ReasonStepUpMaxAge)
	if r := out.Answer.Requirement; r == nil || r.MaxAge != "5m0s" || r.ACR[0] != "urn:mfa" || out.Answer.Reason != "max_age" {
		t.Errorf("requirement %+v", out.Answer)
	}
	// A navigation is sent to the IdP with acr_values and prompt=login.
	out = tg.handle(request(http.MethodGet, "/admin/x", true, pwd))
	want(t, "navigation", out, StepUp, http.StatusFound, ResultStepUp, ReasonStepUpACR)
	if !strings.Contains(out.Location, "acr_values=urn%3Amfa") || !strings.Contains(out.Location, "prompt=login") || !strings.Contains(out.Location, "max_age=300") {
		t.Errorf("step-up start %q", out.Location)
	}
	if len(out.Events) != 1 || out.Events[0].Msg != EventStepUpStarted {
		t.Errorf("events %+v", out.Events)
	}
}

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

default approval := {"may_approve": false, "auto_approve": false}

approval := {"may_approve": true, "auto_approve": false, "max_duration": "30m"} if {
	"approvers" in input.user.groups
	input.access_request.requester.sub != input.user.sub
}

approval := {"may_approve": false, "auto_approve": true, "max_duration": "15m"} if "trusted" in input.user.groups
`

// policyGate is a gate with testPolicy and its X-Role header.
func policyGate(t *testing.T, change func(*Config)) *testGate {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(testPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	engine, err := policies.NewEngine(dir, policies.Options{Query: policies.DefaultQuery, Timeout: time.Minute}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = engine.Close() })
	return newTestGate(t, func(c *Config) {
		c.Policy, c.PolicyHeaders = engine, []string{"X-Role"}
		if change != nil {
			change(c)
		}
	})
}

func TestPolicyDecisions(t *testing.T) {
	tg := policyGate(t, nil)
	s := tg.session()
	s.Groups = []string{"admins"}
	admin := tg.cookie(t, s)
	staff := tg.cookie(t, tg.session())

	// Allowed, with the decision's header, whatever the client sent.
	r := request(http.MethodGet, "/", false, admin)
	r.Header.Set("x_role", "root")
	r.Header.Set("X-ROLE", "root")
	out := tg.handle(r)
	want(t, "allow", out, Allow, 0, ResultAllow, ReasonNone)
	if v, _ := out.upstream("X-Role"); v != "admin" || r.Header.Get("X-Role") != "" || r.Header["X_role"] != nil {
		t.Errorf("X-Role upstream %q, on the request %v", v, r.Header)
	}
	if out.Audit.Revision != tg.cfg.Policy.Current().ID {
		t.Errorf("audit revision %q", out.Audit.Revision)
	}

	for _, c := range []struct {
		path   string
		kind   Kind
		status int
		result Result
		reason Reason
		msg    string
	}{
		{"/", Deny, http.StatusForbidden, ResultDeny, ReasonPolicyDeny, "nobody else"},
		{"/undeclared", Deny, http.StatusForbidden, ResultDeny, ReasonPolicyError, "could not be checked just now"},
		{"/stepup", StepUp, http.StatusUnauthorized, ResultStepUpRequired, ReasonStepUpACR, "sign in again with a stronger method"},
		// The policy's reason is for its authors (in the audit line);
		// the user reads what they can do.
		{"/grant", Deny, http.StatusForbidden, ResultDeny, ReasonPolicyDeny, "You need temporary access to db. Ask for it here."},
	} {
		out := tg.handle(request(http.MethodGet, c.path, false, staff))
		want(t, c.path, out, c.kind, c.status, c.result, c.reason)
		if out.Answer == nil || !strings.Contains(out.Answer.Message, c.msg) {
			t.Errorf("%s: answer %+v", c.path, out.Answer)
		}
	}
	out = tg.handle(request(http.MethodGet, "/grant", false, staff))
	if out.Audit.PolicyReason != "ask for it" || out.Audit.Offer != "db" || out.Audit.Input != nil || out.Answer.Page != "request" || out.Answer.JSON == nil {
		t.Errorf("deny with an offer: audit %+v, answer %+v", out.Audit, out.Answer)
	}
	if errs := tg.logs.FilterMessage("policy error: denied").All(); len(errs) != 1 || !strings.Contains(errs[0].ContextMap()["error"].(string), "X-Undeclared") {
		t.Errorf("policy error log: %v", errs)
	}
}

func TestPolicyInputAndFullDecisionLog(t *testing.T) {
	tg := policyGate(t, func(c *Config) { c.DecisionLogFull = true })
	s := tg.session()
	s.LastSeen = tg.clock.now().Unix() - 10
	r := request(http.MethodGet, "/echo?token=s3cret&page=2", false, tg.cookie(t, s))
	r.Header.Set("User-Agent", "agent/1")
	r.Header.Set("Authorization", "Bearer xyz")
	out := tg.handle(r)
	want(t, "echo", out, Allow, 0, ResultAllow, ReasonNone)
	line, _ := json.Marshal(out.Audit.Input)
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
	if user["sub"] != "alice" || user["iss"] != tg.cfg.Issuer || in["app"] != "payroll" || in["now"].(float64) != float64(tg.clock.now().Unix()) ||
		req["remote_ip"] != "203.0.113.9" {
		t.Errorf("input %s", line)
	}
	if s := in["session"].(map[string]any); s["age_s"].(float64) != 60 || s["idle_s"].(float64) != 10 {
		t.Errorf("session %v", s)
	}
}
