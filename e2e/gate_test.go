package e2e

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
)

func randomSecret(t testing.TB) string {
	b := make([]byte, 48)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// legacyEnv runs caddyfile-examples/legacy-app.Caddyfile as is, against
// the test IdP and the echo upstream.
type legacyEnv struct {
	idp  *idp
	up   *upstream
	gh   *gatehouse
	base string
}

func startLegacy(t *testing.T) *legacyEnv {
	port := freePort(t)
	base := fmt.Sprintf("https://localhost:%d", port)
	p := startIdP(t, idpClient{
		ClientID: "legacy", ClientSecret: "legacy-client-secret",
		RedirectURIs:           []string{base + "/.gatehouse/callback"},
		PostLogoutRedirectURIs: []string{base + "/.gatehouse/logout"},
	})
	up := startUpstream(t)
	example, err := os.ReadFile("../caddyfile-examples/legacy-app.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	gh := startGatehouse(t, string(example), []string{
		"GATEHOUSE_SITE=" + base,
		"GATEHOUSE_ISSUER=" + p.Issuer,
		"GATEHOUSE_CLIENT_ID=legacy",
		"GATEHOUSE_CLIENT_SECRET=legacy-client-secret",
		"GATEHOUSE_COOKIE_SECRET=" + randomSecret(t),
		"GATEHOUSE_UPSTREAM=" + up.Listener.Addr().String(),
	}, base)
	return &legacyEnv{idp: p, up: up, gh: gh, base: base}
}

// TestLegacyApp runs caddyfile-examples/legacy-app.Caddyfile as a user
// meets it. The subtests share one gateway but nothing else: each makes its
// own browser, so any of them runs alone, e.g.
// go test -run 'TestLegacyApp/internal_endpoints'.
func TestLegacyApp(t *testing.T) {
	env := startLegacy(t)
	for _, c := range []struct {
		name string
		run  func(t *testing.T, env *legacyEnv)
	}{
		{"login returns to the original URL with identity headers", legacyLogin},
		{"spoofed identity headers never reach the upstream", legacySpoofedHeaders},
		{"public paths skip login but still strip identity headers", legacyPublicPaths},
		{"API requests get 401 JSON, never a redirect", legacyAPIUnauthenticated},
		{"tampered and malformed cookies are refused", legacyBadCookies},
		{"unverified email is not passed on", legacyUnverifiedEmail},
		{"list values are escaped", legacyListEscaping},
		{"internal endpoints", legacyInternalEndpoints},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, env) })
	}
}

// legacyLogin: a first navigation goes through the IdP and lands on the
// original URL with the identity headers; the cookies, a second request,
// the app's own cookies and the audit log are as they should be.
func legacyLogin(t *testing.T, env *legacyEnv) {
	base := env.base
	b := newBrowser(t, env.gh)
	first := b.navigate(base + "/reports/q3?year=2026&x=%2Fy")
	if !isLoginForm(first) {
		t.Fatalf("an unauthenticated navigation did not reach the IdP login form:\n%s", fmtHops(b.hops))
	}
	checkLegacyAuthorizationRequest(t, env, b.hops[0])

	landed := b.submitLogin(first, "alice")
	mustStatus(t, landed, http.StatusOK)
	if got := landed.Request.URL.String(); got != base+"/reports/q3?year=2026&x=%2Fy" {
		t.Errorf("landed on %s, want the original URL", got)
	}
	e := landed.echo(t)
	want := map[string]string{
		"X-Remote-User":   "alice@example.com",
		"X-Remote-Sub":    "alice",
		"X-Remote-Name":   "Alice Employee",
		"X-Remote-Groups": "staff,payroll-users",
	}
	for h, v := range want {
		if got := e.Headers[h]; len(got) != 1 || got[0] != v {
			t.Errorf("upstream got %s = %q, want [%q]", h, got, v)
		}
	}
	c, idt := checkLegacyLoginCookies(t, b)

	// A second request: no new login, no new cookie within the minute.
	again := b.navigate(base + "/other")
	mustStatus(t, again, http.StatusOK)
	if len(b.hops) != 1 {
		t.Errorf("a logged-in navigation took %d hops:\n%s", len(b.hops), fmtHops(b.hops))
	}
	if sc := b.setCookies("__Host-gatehouse"); len(sc) != 0 {
		t.Errorf("the session cookie was re-issued on an ordinary request")
	}
	// The app gets the browser's other cookies, never Gatehouse's.
	b.jar.SetCookies(mustParse(base+"/"), []*http.Cookie{{Name: "app_pref", Value: "dark", Path: "/"}})
	withCookies := b.navigate(base + "/other")
	mustStatus(t, withCookies, http.StatusOK)
	if got := strings.Join(withCookies.echo(t).Headers["Cookie"], "; "); got != "app_pref=dark" {
		t.Errorf("the upstream got Cookie %q, want only the app's own", got)
	}

	// The audit log has a line for the allowed request, with no secrets.
	found := env.gh.waitAudit(t, func(l map[string]any) bool {
		return l["path"] == "/other" && l["result"] == "allow" && l["user"] == "alice" && l["app"] == "legacy" && l["decision_id"] != ""
	}) != nil
	if !found {
		t.Errorf("no audit line for the allowed request to /other")
	}
	logs := env.gh.log.String()
	if strings.Contains(logs, c.Value) || strings.Contains(logs, idt[0].Value) {
		t.Errorf("a cookie value appears in the logs")
	}
	if strings.Contains(logs, "legacy-client-secret") {
		t.Errorf("the client secret appears in the logs")
	}
}

// checkLegacyAuthorizationRequest checks the first hop of a login: a 302
// to the IdP with a PKCE authorization request and no prompt.
func checkLegacyAuthorizationRequest(t *testing.T, env *legacyEnv, authz *http.Response) {
	t.Helper()
	if authz.StatusCode != http.StatusFound {
		t.Fatalf("first hop %d, want 302 to the IdP", authz.StatusCode)
	}
	loc, _ := url.Parse(authz.Header.Get("Location"))
	q := loc.Query()
	for k, want := range map[string]string{"response_type": "code", "client_id": "legacy", "code_challenge_method": "S256", "redirect_uri": env.base + "/.gatehouse/callback"} {
		if q.Get(k) != want {
			t.Errorf("authorization request %s = %q, want %q", k, q.Get(k), want)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge", "max_age"} {
		if q.Get(k) == "" {
			t.Errorf("authorization request has no %s", k)
		}
	}
	if q.Get("prompt") != "" {
		t.Errorf("a first login sent prompt=%s; single sign-on should work", q.Get("prompt"))
	}
	if !strings.HasPrefix(loc.String(), env.idp.Issuer) {
		t.Errorf("login went to %s, not the IdP", loc)
	}
}

// checkLegacyLoginCookies checks the cookies as set during a login: one
// session cookie and the ID-token cookie, which it returns.
func checkLegacyLoginCookies(t *testing.T, b *browser) (session *http.Cookie, idt []*http.Cookie) {
	t.Helper()
	sess := b.setCookies("__Host-gatehouse")
	if len(sess) != 1 {
		t.Fatalf("%d session Set-Cookies during login, want 1", len(sess))
	}
	c := sess[0]
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" {
		t.Errorf("session cookie attributes: %+v", c)
	}
	if n := len(c.Name) + 1 + len(c.Value); n > 2048 {
		t.Errorf("session cookie is %d bytes; it should stay well under 4 KB", n)
	} else {
		t.Logf("session cookie: %d bytes (name=value)", n)
	}
	idt = b.setCookies("__Secure-gatehouse_idt")
	if len(idt) != 1 || idt[0].Path != "/.gatehouse/" || !idt[0].Secure || !idt[0].HttpOnly {
		t.Errorf("ID-token cookie: %+v", idt)
	} else {
		t.Logf("ID-token cookie: %d bytes (name=value)", len(idt[0].Name)+1+len(idt[0].Value))
	}
	return c, idt
}

// legacySpoofedHeaders: identity headers a client sends, in any spelling
// or named in Connection, are replaced by the session's.
func legacySpoofedHeaders(t *testing.T, env *legacyEnv) {
	base := env.base
	b := newBrowser(t, env.gh)
	b.login(base+"/", "alice")
	req, _ := http.NewRequest(http.MethodGet, base+"/spoof", nil)
	setNavigation(req)
	req.Header["X-Remote-User"] = []string{"mallory@example.com", "eve@example.com"}
	req.Header["x-remote-user"] = []string{"mallory2@example.com"}
	req.Header["X_Remote_User"] = []string{"mallory3@example.com"}
	req.Header["X-REMOTE-GROUPS"] = []string{"admins"}
	req.Header["X_remote_sub"] = []string{"root"}
	req.Header.Set("Connection", "keep-alive, X-Remote-User, x_remote_groups")
	p := b.do(req)
	mustStatus(t, p, http.StatusOK)
	e := p.echo(t)
	for name, vals := range e.Headers {
		n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		switch n {
		case "x-remote-user":
			if !slices.Equal(vals, []string{"alice@example.com"}) {
				t.Errorf("upstream got %s = %q", name, vals)
			}
		case "x-remote-groups":
			if !slices.Equal(vals, []string{"staff,payroll-users"}) {
				t.Errorf("upstream got %s = %q", name, vals)
			}
		case "x-remote-sub":
			if !slices.Equal(vals, []string{"alice"}) {
				t.Errorf("upstream got %s = %q", name, vals)
			}
		}
		if strings.Contains(name, "_") && strings.HasPrefix(n, "x-remote") {
			t.Errorf("upstream got an underscore variant %s = %q", name, vals)
		}
	}
	for _, h := range []string{"X-Remote-User", "X-Remote-Groups", "X-Remote-Sub", "X-Remote-Name"} {
		if len(e.Headers[h]) != 1 {
			t.Errorf("upstream got %s = %q, want exactly one value", h, e.Headers[h])
		}
	}
}

// legacyPublicPaths: a public path is served without a session, with no
// client identity headers, and audited; a dot segment does not make a
// private path public.
func legacyPublicPaths(t *testing.T, env *legacyEnv) {
	base := env.base
	b := newBrowser(t, env.gh)
	req, _ := http.NewRequest(http.MethodGet, base+"/static/app.css", nil)
	req.Header.Set("X-Remote-User", "mallory@example.com")
	req.Header.Set("x_remote_groups", "admins")
	p := b.do(req)
	mustStatus(t, p, http.StatusOK)
	e := p.echo(t)
	for name := range e.Headers {
		if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(name, "_", "-")), "x-remote-") {
			t.Errorf("a public path passed a client's %s to the upstream", name)
		}
	}
	found := env.gh.waitAudit(t, func(l map[string]any) bool { return l["path"] == "/static/app.css" && l["result"] == "public" }) != nil
	if !found {
		t.Error("no audit line for the public request")
	}
	// The public rule is not a prefix trick.
	p = b.fetch(http.MethodGet, base+"/static/../private")
	mustStatus(t, p, http.StatusUnauthorized)
}

// legacyAPIUnauthenticated: requests that are not a browser's navigation
// get 401 (JSON, or a page for a form POST), never a redirect, and never
// reach the upstream.
func legacyAPIUnauthenticated(t *testing.T, env *legacyEnv) {
	base := env.base
	b := newBrowser(t, env.gh)
	c := b.noRedirects()
	hits := env.up.hits.Load()
	for _, tc := range []struct {
		method string
		hdr    map[string]string
	}{
		{"GET", map[string]string{"Accept": "application/json"}},
		{"GET", map[string]string{"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"}},
		{"GET", map[string]string{"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "Accept": "*/*"}},
		{"POST", map[string]string{"Accept": "text/html"}},
		{"DELETE", nil},
		{"HEAD", map[string]string{"Accept": "text/html"}},
		{"OPTIONS", nil},
	} {
		req, _ := http.NewRequest(tc.method, base+"/api/data", nil)
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Location") != "" {
			t.Errorf("%s %v: status %d Location %q, want 401 without redirect", tc.method, tc.hdr, resp.StatusCode, resp.Header.Get("Location"))
		}
		// A browser's form POST gets a page (with a sign-in link, still
		// no redirect); everything else gets JSON.
		formPost := tc.method == "POST" && tc.hdr["Accept"] == "text/html"
		if tc.method != "HEAD" && !formPost && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s %v: Content-Type %q, want JSON", tc.method, tc.hdr, resp.Header.Get("Content-Type"))
		}
	}
	p := b.fetch(http.MethodGet, base+"/api/data?x=1")
	var body struct {
		Error    string
		Reason   string
		LoginURL string `json:"login_url"`
	}
	p.json(t, &body)
	if body.Error != "unauthenticated" || body.Reason != "no_session" || body.LoginURL != "/.gatehouse/login?rd=%2Fapi%2Fdata%3Fx%3D1" {
		t.Errorf("401 body: %+v", body)
	}
	if env.up.hits.Load() != hits {
		t.Error("an unauthenticated request reached the upstream")
	}
}

// legacyBadCookies: a tampered, truncated, malformed, oversized or empty
// session cookie is no session, nor is a good one next to a tampered copy.
func legacyBadCookies(t *testing.T, env *legacyEnv) {
	base := env.base
	b := newBrowser(t, env.gh)
	b.login(base+"/", "alice")
	good := b.cookie(base, "__Host-gatehouse")
	if good == nil {
		t.Fatal("no session cookie")
	}
	flipped := []byte(good.Value)
	flipped[len(flipped)/2] ^= 0x01
	for name, value := range map[string]string{
		"tampered":   string(flipped),
		"truncated":  good.Value[:len(good.Value)-5],
		"bad base64": "%%%not-base64%%%",
		"8 KB":       strings.Repeat("A", 8192),
		"empty":      "",
	} {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/x", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Cookie", "__Host-gatehouse="+value)
		resp, err := transport(env.gh).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s cookie: status %d, want 401", name, resp.StatusCode)
		}
	}
	// The good cookie next to junk of the same name is no session
	// (duplicate_cookie): either copy could be the shadow.
	req, _ := http.NewRequest(http.MethodGet, base+"/api/x", nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Add("Cookie", "__Host-gatehouse="+string(flipped))
	req.Header.Add("Cookie", "__Host-gatehouse="+good.Value)
	resp, err := transport(env.gh).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "duplicate_cookie") {
		t.Errorf("a valid cookie next to a tampered one: status %d %s, want 401 duplicate_cookie", resp.StatusCode, body)
	}
}

// legacyUnverifiedEmail: bob's email is not verified, so only his sub is
// passed on.
func legacyUnverifiedEmail(t *testing.T, env *legacyEnv) {
	b := newBrowser(t, env.gh)
	e := b.login(env.base+"/", "bob").echo(t)
	if v := e.Headers["X-Remote-User"]; v != nil {
		t.Errorf("upstream got X-Remote-User %q for an unverified email", v)
	}
	if v := e.Headers["X-Remote-Sub"]; !slices.Equal(v, []string{"bob"}) {
		t.Errorf("upstream got X-Remote-Sub %q", v)
	}
}

// legacyListEscaping: a comma inside a group name is escaped in the list.
func legacyListEscaping(t *testing.T, env *legacyEnv) {
	b := newBrowser(t, env.gh)
	e := b.login(env.base+"/", "dave").echo(t)
	if v := e.Headers["X-Remote-Groups"]; !slices.Equal(v, []string{"partners,weird%2Cgroup"}) {
		t.Errorf("upstream got X-Remote-Groups %q", v)
	}
}

// legacyInternalEndpoints: /.gatehouse/ answers its own paths, 404 for the
// others (in any spelling), and never passes them, nor a refused path, to
// the upstream.
func legacyInternalEndpoints(t *testing.T, env *legacyEnv) {
	base := env.base
	b := newBrowser(t, env.gh)
	hits := env.up.hits.Load()
	p := b.fetch(http.MethodGet, base+"/.gatehouse/healthz")
	mustStatus(t, p, http.StatusOK)
	for _, path := range []string{"/.gatehouse/nope", "/.GATEHOUSE/nope", "/.gatehouse/", "/x/../.gatehouse/nope"} {
		p := b.fetch(http.MethodGet, base+path)
		mustStatus(t, p, http.StatusNotFound)
	}
	p = b.fetch(http.MethodGet, base+"/admin;x")
	mustStatus(t, p, http.StatusBadRequest)
	if env.up.hits.Load() != hits {
		t.Error("an internal or refused path reached the upstream")
	}
}

// transport is a bare HTTP transport that trusts Gatehouse's test CA: no
// cookie jar, no redirects.
func transport(g *gatehouse) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: g.roots}
	return tr
}
