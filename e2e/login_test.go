package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// TestLoginFlowAbuse runs the callback, logout and return-URL scenarios
// against the legacy-app example. The subtests share one gateway but
// nothing else: each makes its own browsers, so any of them runs alone,
// e.g. go test -run 'TestLoginFlowAbuse/50_tabs_start_a_login'.
func TestLoginFlowAbuse(t *testing.T) {
	env := startLegacy(t)
	for _, c := range []struct {
		name string
		run  func(t *testing.T, env *legacyEnv)
	}{
		{"a replayed callback is refused", loginReplayedCallback},
		{"a callback from another browser is refused", loginCallbackFromAnotherBrowser},
		{"callback abuse", loginCallbackAbuse},
		{"a wrong issuer in the callback is refused", loginWrongIssuer},
		{"parallel logins in several tabs all complete", loginParallelTabs},
		{"50 tabs start a login", loginFiftyTabs},
		{"return URLs never leave the origin", loginReturnURLs},
		{"logout ends the session here and at the IdP", loginLogout},
		{"concurrent logins of many users", loginConcurrentUsers},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, env) })
	}
}

// startLogin navigates to path and stops at the IdP login form.
func (env *legacyEnv) startLogin(t *testing.T, b *browser, path string) page {
	t.Helper()
	p := b.navigate(env.base + path)
	if !isLoginForm(p) {
		t.Fatalf("no login form for %s:\n%s", path, fmtHops(b.hops))
	}
	return p
}

// loginUntilCallback signs in at the IdP but stops before the callback,
// returning its URL.
func (env *legacyEnv) loginUntilCallback(t *testing.T, b *browser, form page, user string) string {
	t.Helper()
	m := formActionRE.FindStringSubmatch(form.Body)
	action, _ := form.Request.URL.Parse(m[1])
	c := b.noRedirects()
	next := action.String()
	body := url.Values{"login": {user}, "password": {user + "-pw"}}.Encode()
	method := http.MethodPost
	for range 10 {
		req, _ := http.NewRequest(method, next, strings.NewReader(body))
		if method == http.MethodPost {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		setNavigation(req)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("no redirect from %s (%d)", next, resp.StatusCode)
		}
		if strings.HasPrefix(loc.String(), env.base+"/.gatehouse/callback") {
			return loc.String()
		}
		next, method, body = loc.String(), http.MethodGet, ""
	}
	t.Fatal("never reached the callback")
	return ""
}

// loginReplayedCallback: a callback used once is refused the second
// time, with the very login cookie or in the same browser, and audited as
// state_replayed.
func loginReplayedCallback(t *testing.T, env *legacyEnv) {
	b := newBrowser(t, env.gh)
	form := env.startLogin(t, b, "/replay")
	cb := env.loginUntilCallback(t, b, form, "alice")
	loginCookie := loginCookieFor(t, b, cb)
	first := b.navigate(cb)
	mustStatus(t, first, http.StatusOK)
	if first.Request.URL.Path != "/replay" {
		t.Fatalf("landed on %s", first.Request.URL)
	}
	// Replay with the very same login cookie, as an attacker holding
	// both would.
	req, _ := http.NewRequest(http.MethodGet, cb, nil)
	setNavigation(req)
	req.Header.Set("Cookie", loginCookie.Name+"="+loginCookie.Value)
	resp, err := transport(env.gh).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("replayed callback: status %d, want 400", resp.StatusCode)
	}
	if hasSessionCookie(resp) {
		t.Fatal("a replayed callback set a session cookie")
	}
	if findAudit(auditLine("path", "/.gatehouse/callback", "result", "login_failed", "reason", "state_replayed"), env.gh) == nil {
		t.Error("no audit line says state_replayed")
	}
	// And in the same browser, whose login cookie is spent.
	again := b.navigate(cb)
	mustStatus(t, again, http.StatusBadRequest)
}

// loginCallbackFromAnotherBrowser: a victim's callback opened in an
// attacker's browser never gives that browser a session.
func loginCallbackFromAnotherBrowser(t *testing.T, env *legacyEnv) {
	base := env.base
	victim := newBrowser(t, env.gh)
	form := env.startLogin(t, victim, "/x")
	cb := env.loginUntilCallback(t, victim, form, "alice")
	attacker := newBrowser(t, env.gh)
	env.startLogin(t, attacker, "/y") // the attacker has a login cookie of its own
	p := attacker.navigate(cb)
	// Either the callback's slot in this browser is empty (400, "not
	// started in this browser"), or it holds the attacker's own newer
	// login, and the callback looks like one of this browser's logins
	// that a newer one replaced: it restarts a login of the attacker's
	// own (here, the IdP's form). Never the victim's session.
	switch {
	case p.StatusCode == http.StatusBadRequest:
		if !strings.Contains(p.Body, "not started in this browser") {
			t.Errorf("the error page does not say why:\n%s", p.Body)
		}
	case isLoginForm(p):
	default:
		t.Errorf("another browser's callback: %d\n%s", p.StatusCode, fmtHops(attacker.hops))
	}
	if attacker.cookie(base, "__Host-gatehouse") != nil {
		t.Fatal("the attacker's browser got a session")
	}
}

// loginCallbackAbuse: callbacks with no, a malformed or an unknown
// state, or an IdP error, get an error page with a strict CSP.
func loginCallbackAbuse(t *testing.T, env *legacyEnv) {
	base := env.base
	b := newBrowser(t, env.gh)
	form := env.startLogin(t, b, "/z")
	cb, _ := url.Parse(env.loginUntilCallback(t, b, form, "alice"))
	state := cb.Query().Get("state")
	for name, q := range map[string]string{
		"no state":        "code=abc",
		"malformed state": "code=abc&state=..%2F..",
		"unknown state":   "code=abc&state=AAAAAAAAAAAAAAAAAAAAAAAAAA",
		"idp error":       "error=access_denied&state=" + state,
	} {
		p := b.navigate(base + "/.gatehouse/callback?" + q)
		if p.StatusCode != http.StatusBadRequest && p.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 400 or 401", name, p.StatusCode)
		}
		if !strings.Contains(p.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("%s: the error page has no strict CSP", name)
		}
	}
}

// loginWrongIssuer: a callback whose iss is not the IdP's (mix-up) is refused.
func loginWrongIssuer(t *testing.T, env *legacyEnv) {
	b := newBrowser(t, env.gh)
	form := env.startLogin(t, b, "/mixup")
	cb, _ := url.Parse(env.loginUntilCallback(t, b, form, "alice"))
	q := cb.Query()
	q.Set("iss", "https://evil.example")
	cb.RawQuery = q.Encode()
	p := b.navigate(cb.String())
	mustStatus(t, p, http.StatusBadRequest)
}

// loginParallelTabs: two tabs that start a login each land on their own
// page, whichever finishes first.
func loginParallelTabs(t *testing.T, env *legacyEnv) {
	b := newBrowser(t, env.gh)
	form1 := env.startLogin(t, b, "/tab1")
	form2 := env.startLogin(t, b, "/tab2")
	// Finish the second tab first; the first then goes straight
	// through the IdP's single sign-on.
	p2 := b.submitLogin(form2, "alice")
	if p2.Request.URL.Path != "/tab2" {
		t.Fatalf("tab 2 landed on %s", p2.Request.URL)
	}
	p1 := b.submitLogin(form1, "alice")
	if p1.Request.URL.Path != "/tab1" {
		t.Fatalf("tab 1 landed on %s:\n%s", p1.Request.URL, fmtHops(b.hops))
	}
}

// loginFiftyTabs: pending logins are bounded (issue 11): 50 tabs that
// each start a login leave at most 3 login cookies; the newest finishes at
// once and an older one restarts cleanly, landing where it was going.
func loginFiftyTabs(t *testing.T, env *legacyEnv) {
	base := env.base
	b := newBrowser(t, env.gh)
	forms := make([]page, 50)
	for i := range forms {
		forms[i] = env.startLogin(t, b, fmt.Sprintf("/tab/%d?x=%d", i, i))
	}
	cb := mustParse(base + "/.gatehouse/callback")
	total, logins := 0, 0
	for _, c := range b.jar.Cookies(cb) {
		if strings.HasPrefix(c.Name, "__Secure-gatehouse_") || strings.HasPrefix(c.Name, "__Host-gatehouse") {
			total += len(c.Name) + 1 + len(c.Value)
		}
		if strings.HasPrefix(c.Name, "__Secure-gatehouse_login_") {
			logins++
		}
	}
	if logins > 3 || total > 1600 {
		t.Fatalf("after 50 started logins: %d login cookies, %d bytes of Gatehouse cookies", logins, total)
	}
	newest := b.submitLogin(forms[49], "alice")
	mustStatus(t, newest, http.StatusOK)
	if newest.Request.URL.RequestURI() != "/tab/49?x=49" {
		t.Fatalf("the newest tab landed on %s:\n%s", newest.Request.URL, fmtHops(b.hops))
	}
	// All of Gatehouse's cookies this browser sends to the callback,
	// with a session, its ID token and 3 pending logins: under 4 KB.
	total = 0
	for _, c := range b.jar.Cookies(cb) {
		if strings.Contains(c.Name, "gatehouse") {
			total += len(c.Name) + 1 + len(c.Value) + 2
		}
	}
	if total >= 4096 {
		t.Errorf("%d bytes of Gatehouse cookies at the callback, want under 4 KB", total)
	}
	t.Logf("Gatehouse cookies at the callback after 50 tabs and a login: %d bytes", total)
	// Older tabs: whatever their slot holds now, each finishes on its
	// own page, signed in, without an error page.
	for _, i := range []int{0, 17, 48} {
		p := b.submitLogin(forms[i], "alice")
		mustStatus(t, p, http.StatusOK)
		if p.Request.URL.RequestURI() != fmt.Sprintf("/tab/%d?x=%d", i, i) {
			t.Errorf("tab %d landed on %s:\n%s", i, p.Request.URL, fmtHops(b.hops))
		}
		if len(b.hops) > 8 {
			t.Errorf("tab %d took %d hops:\n%s", i, len(b.hops), fmtHops(b.hops))
		}
	}
}

// loginReturnURLs: hostile rd values fall back to /, good ones are kept, and a
// whole login from a scheme-relative path or rd stays on this origin.
func loginReturnURLs(t *testing.T, env *legacyEnv) {
	base := env.base
	b := newBrowser(t, env.gh)
	b.login(base+"/", "alice")
	c := b.noRedirects()
	hostile := []string{
		"//evil.example", "///evil.example", "/\\evil.example", "/%5Cevil.example", "/%5cevil.example",
		"/%2F%2Fevil.example", "/%252F%252Fevil.example", "https:evil.example", "https://evil.example/",
		"http:/evil.example", "javascript:alert(1)", "/\t/evil.example", "/\r\n/evil.example",
		"/%09/evil.example", "/%0d%0aSet-Cookie:x=y", "//user@evil.example", "//evil.example%40app",
		"//ｅvil.example", "/.gatehouse/logout", "/x/../.gatehouse/logout", "evil.example", "",
	}
	for _, rd := range hostile {
		req, _ := http.NewRequest(http.MethodGet, base+"/.gatehouse/login?rd="+url.QueryEscape(rd), nil)
		setNavigation(req)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != "/" {
			t.Errorf("rd=%q: %d Location %q, want 302 to /", rd, resp.StatusCode, loc)
		}
	}
	for _, rd := range []string{"/reports?x=1", "/a/b%20c", "/@me"} {
		req, _ := http.NewRequest(http.MethodGet, base+"/.gatehouse/login?rd="+url.QueryEscape(rd), nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); loc != rd {
			t.Errorf("rd=%q: Location %q, want it kept", rd, loc)
		}
	}
	// Through a whole login: a scheme-relative request path falls
	// back to / on this origin.
	b2 := newBrowser(t, env.gh)
	p := b2.login(base+"//evil.example/x", "alice")
	if p.Request.URL.Host != strings.TrimPrefix(base, "https://") || p.Request.URL.Path != "/" {
		t.Errorf("after login from //evil.example/x the browser is at %s", p.Request.URL)
	}
	b3 := newBrowser(t, env.gh)
	p = b3.login(base+"/.gatehouse/login?rd="+url.QueryEscape("//evil.example"), "alice")
	if p.Request.URL.String() != base+"/" {
		t.Errorf("after login with rd=//evil.example the browser is at %s", p.Request.URL)
	}
}

// loginLogout: logout goes through the IdP's end-session endpoint, ends the
// session, and the next login asks for the password (prompt=login).
func loginLogout(t *testing.T, env *legacyEnv) {
	base := env.base
	b := newBrowser(t, env.gh)
	b.login(base+"/before", "alice")
	p := b.navigate(base + "/.gatehouse/logout")
	// The IdP asks for confirmation.
	var toIdP *http.Response
	for _, h := range b.hops {
		if strings.HasPrefix(h.Request.URL.String(), env.idp.Issuer+"/session/end") {
			toIdP = h
		}
	}
	if toIdP == nil {
		t.Fatalf("logout did not go to the IdP's end_session_endpoint:\n%s", fmtHops(b.hops))
	}
	q := toIdP.Request.URL.Query()
	if q.Get("id_token_hint") == "" || q.Get("post_logout_redirect_uri") != base+"/.gatehouse/logout" {
		t.Errorf("end-session request: %s", toIdP.Request.URL)
	}
	p = b.submitForm(p, url.Values{"logout": {"yes"}})
	mustStatus(t, p, http.StatusOK)
	if p.Request.URL.String() != base+"/.gatehouse/logout" || !strings.Contains(p.Body, "signed out") {
		t.Fatalf("after the IdP logout the browser is at %s:\n%s", p.Request.URL, p.Body)
	}
	// The session is gone, and the next login asks for the password.
	next := b.navigate(base + "/after")
	if !isLoginForm(next) {
		t.Fatalf("after logout, a navigation did not show the login form:\n%s", fmtHops(b.hops))
	}
	loc, _ := url.Parse(b.hops[0].Header.Get("Location"))
	if loc.Query().Get("prompt") != "login" {
		t.Errorf("the login after logout did not send prompt=login: %s", loc)
	}
	landed := b.submitLogin(next, "alice")
	if landed.Request.URL.Path != "/after" {
		t.Errorf("after logging in again the browser is at %s", landed.Request.URL)
	}
}

// loginConcurrentUsers: 8 browsers log in as 4 users at once; each reaches the
// upstream as itself.
func loginConcurrentUsers(t *testing.T, env *legacyEnv) {
	base := env.base
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			b := newBrowser(t, env.gh)
			user := []string{"alice", "bob", "carol", "dave"}[i%4]
			p := b.login(base+"/c", user)
			if e := p.echo(t); e.Headers["X-Remote-Sub"][0] != user {
				t.Errorf("login as %s reached the upstream as %q", user, e.Headers["X-Remote-Sub"])
			}
		})
	}
	wg.Wait()
}

// loginCookieFor returns the login cookie a browser holds for the state in
// a callback URL.
// loginCookieFor returns the login-slot cookie of a browser that has one
// login in progress (the one callback is for).
func loginCookieFor(t *testing.T, b *browser, callback string) *http.Cookie {
	t.Helper()
	u, _ := url.Parse(callback)
	var found []*http.Cookie
	for _, c := range b.jar.Cookies(u) {
		if strings.HasPrefix(c.Name, "__Secure-gatehouse_login_") {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d login cookies, want the one of this login", len(found))
	}
	return found[0]
}

func hasSessionCookie(resp *http.Response) bool {
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-gatehouse" && c.MaxAge >= 0 && c.Value != "" {
			return true
		}
	}
	return false
}
