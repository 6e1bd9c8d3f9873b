package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hostileCase is one attempt to get around the gateway, and the status it
// must get.
type hostileCase struct {
	group, name string
	want        int
	// run performs the attempt; it returns the status and, when something
	// beyond the status is wrong, what.
	run func(t *testing.T) (int, string)
}

// rawClient sends requests exactly as built: no cookie jar, no redirects,
// HTTP/1.1 or HTTP/2.
type rawClient struct {
	c *http.Client
}

func newRawClient(roots *x509.CertPool, h2 bool) *rawClient {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &rawClient{c: &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (rc *rawClient) send(t *testing.T, method, rawURL string, hdr http.Header, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := rc.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1])
	}
	return h
}

// TestHostile runs about 220 attempts to get around the gateway, each
// naming the status it must get, grouped by attack class: each group's
// cases come from one function below (openRedirectCases, pathCases, ...).
// The cases share one gateway and the sessions made at the start, and
// run in order; none depends on another, so any runs alone, e.g.
// go test -run 'TestHostile/path_tricks' or
// go test -run 'TestHostile/forged_tokens/alg_none'.
func TestHostile(t *testing.T) {
	env := startHostile(t)
	var cases []hostileCase
	for _, group := range []func(*hostileEnv) []hostileCase{
		openRedirectCases,
		headerSpoofingCases,
		foreignHeaderCases,
		pathCases,
		methodCases,
		upgradeCases,
		assertionCases,
		hostCases,
		cookieCases,
		callbackCases,
		forgedTokenCases,
		stepUpDowngradeCases,
		csrfCases,
		forgedRequestCases,
	} {
		cases = append(cases, group(env)...)
	}
	for _, c := range cases {
		t.Run(c.group+"/"+c.name, func(t *testing.T) {
			got, problem := c.run(t)
			if got != c.want || problem != "" {
				t.Errorf("status %d, want %d %s", got, c.want, problem)
			}
		})
	}
	t.Logf("%d hostile cases", len(cases))
}

// hostileEnv is the gateway the hostile cases attack, and the sessions
// they use: alice (staff, password only), bob (contractor: offered a
// grant), carol (another user's offer and token).
type hostileEnv struct {
	main     string // the site
	alt      string // a second name of the same site
	evilSite string // a site whose IdP lies (evil)
	gh       *gatehouse
	up       *upstream
	evil     *evilIdP
	h1, h2   *rawClient // HTTP/1.1 and HTTP/2

	alice                  *browser
	aliceCookie, bobCookie string     // "__Host-gatehouse=<value>"
	bobForm                url.Values // the request form on bob's deny page
	carolOffer, carolCSRF  string
}

// startHostile starts the gateway with the two sites and signs in alice,
// bob and carol.
func startHostile(t *testing.T) *hostileEnv {
	main := fmt.Sprintf("https://localhost:%d", freePort(t))
	evilSite := fmt.Sprintf("https://localhost:%d", freePort(t))
	idp := startIdP(t, idpClient{ClientID: "hostile", ClientSecret: "hostile-secret",
		RedirectURIs: []string{main + "/.gatehouse/callback"}, PostLogoutRedirectURIs: []string{main + "/.gatehouse/logout"}})
	evil := startEvilIdP(t)
	up := startUpstream(t)
	policy, _ := filepath.Abs("../policies")
	keyPath := writeKey(t, t.TempDir(), "assertion.pem")
	alt := strings.Replace(main, "localhost", "127.0.0.1", 1) // a second name of the same site
	gh := startGatehouse(t, fmt.Sprintf(`%[1]s, %[9]s {
	gatehouse {
		app projects
		issuer %[2]s
		client_id hostile
		client_secret hostile-secret
		scopes openid email profile groups
		cookie_secret %[3]s
		identity_header X-Remote-User email
		identity_header X-Remote-Groups groups
		assertion_header X-Gatehouse-Assertion {
			key %[4]s
			claims sub email
			issuer %[1]s
		}
		policy %[5]s
		policy_headers X-Projects-Role
		decision_log full
		step_up /work/secret /work/secret/* {
			acr urn:gatehouse:loa:mfa
			max_age 5m
		}
		public /static/*
		upgrade_origins https://partner.example
	}
	reverse_proxy %[6]s
}

%[7]s {
	gatehouse {
		app evil
		issuer %[8]s
		client_id evil
		cookie_secret %[3]s
		cookie_name evil
		step_up /admin /admin/* {
			acr urn:gatehouse:loa:mfa
			max_age 5m
		}
	}
	reverse_proxy %[6]s
}
`, main, idp.Issuer, randomSecret(t), keyPath, policy, up.Listener.Addr(), evilSite, evil.URL, alt), nil, main, evilSite)

	h1, h2 := newRawClient(gh.roots, false), newRawClient(gh.roots, true)
	// Sessions: alice (staff, password only), bob (contractor: offered a
	// grant), carol (another user's offer and token).
	alice := newBrowser(t, gh)
	mustStatus(t, alice.login(main+"/work/1", "alice"), http.StatusOK)
	aliceCookie := "__Host-gatehouse=" + alice.cookie(main, "__Host-gatehouse").Value
	bob := newBrowser(t, gh)
	bobDeny := bob.login(main+"/work/1", "bob")
	mustStatus(t, bobDeny, http.StatusForbidden)
	bobCookie := "__Host-gatehouse=" + bob.cookie(main, "__Host-gatehouse").Value
	bobForm := form(bobDeny)
	carol := newBrowser(t, gh)
	mustStatus(t, carol.login(main+"/", "carol"), http.StatusOK)
	carolOffer := form(carol.navigate(main + "/admin/")).Get("offer")
	var carolJS struct{ CSRF string }
	carol.fetch(http.MethodGet, main+"/.gatehouse/access").json(t, &carolJS)
	if carolOffer == "" || carolJS.CSRF == "" {
		// Without them, "another user's offer" and "another session's
		// token" would quietly test "no offer" and "no token".
		t.Fatalf("carol's offer %q and CSRF token %q must both be set", carolOffer, carolJS.CSRF)
	}
	return &hostileEnv{main: main, alt: alt, evilSite: evilSite, gh: gh, up: up, evil: evil, h1: h1, h2: h2,
		alice: alice, aliceCookie: aliceCookie, bobCookie: bobCookie, bobForm: bobForm, carolOffer: carolOffer, carolCSRF: carolJS.CSRF}
}

// hostileCases collects one group's cases.
type hostileCases struct {
	group string
	list  []hostileCase
}

func (cs *hostileCases) add(name string, want int, run func(*testing.T) (int, string)) {
	cs.list = append(cs.list, hostileCase{cs.group, name, want, run})
}

// acceptJSON is the header of a request that wants JSON (an API call).
var acceptJSON = []string{"Accept", "application/json"}

// webSocketHandshake is the headers of a WebSocket upgrade request.
var webSocketHandshake = []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}

// as makes headers (pairs of name and value) with a Cookie header, when
// cookie is set.
func (env *hostileEnv) as(cookie string, kv ...string) http.Header {
	h := hdr(kv...)
	if cookie != "" {
		h.Set("Cookie", cookie)
	}
	return h
}

// status is a case that sends a request and reports the status.
func (env *hostileEnv) status(c *rawClient, method, path string, h http.Header) func(*testing.T) (int, string) {
	return func(t *testing.T) (int, string) {
		resp, _ := c.send(t, method, env.main+path, h, nil)
		return resp.StatusCode, ""
	}
}

// reached is a case that sends a request and reports, beyond the status,
// whether it got to the upstream when refused, or was answered without it
// when allowed.
func (env *hostileEnv) reached(c *rawClient, method, path string, h http.Header) func(*testing.T) (int, string) {
	return func(t *testing.T) (int, string) {
		before := env.up.hits.Load()
		resp, _ := c.send(t, method, env.main+path, h, nil)
		if env.up.hits.Load() != before && resp.StatusCode >= 400 {
			return resp.StatusCode, "the upstream was reached"
		}
		if env.up.hits.Load() == before && resp.StatusCode < 300 {
			return resp.StatusCode, "answered without the upstream"
		}
		return resp.StatusCode, ""
	}
}

// post is a case that posts a form with the cookie and headers (pairs of
// name and value) and reports the status.
func (env *hostileEnv) post(path, cookie string, v url.Values, kv ...string) func(*testing.T) (int, string) {
	return func(t *testing.T) (int, string) {
		h := env.as(cookie, append([]string{"Content-Type", "application/x-www-form-urlencoded"}, kv...)...)
		resp, _ := env.h1.send(t, http.MethodPost, env.main+path, h, strings.NewReader(v.Encode()))
		return resp.StatusCode, ""
	}
}

// request is bob's grant request form (his offer and token, a reason and
// a duration), changed by change.
func (env *hostileEnv) request(change func(v url.Values)) url.Values {
	v := url.Values{"csrf": {env.bobForm.Get("csrf")}, "offer": {env.bobForm.Get("offer")}, "reason": {"x"}, "duration": {"1h"}}
	if change != nil {
		change(v)
	}
	return v
}

// openRedirectCases: hostile return URLs after login and step-up, request
// paths that would become one, and the post-logout and redirect URIs.
func openRedirectCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "open redirect"}
	main, h1, gh, aliceCookie := env.main, env.h1, env.gh, env.aliceCookie
	for _, rd := range []string{"//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example", "/%5Cevil.example", "/%5cevil.example",
		"/%2F%2Fevil.example", "/%2f%2fevil.example", "/%252F%252Fevil.example", "https:evil.example", "https://evil.example",
		"http:/evil.example", "HTTPS://evil.example", "javascript:alert(1)", "data:text/html,x", "/\t/evil.example", "/\r\n/evil.example",
		"/%09/evil.example", "/%0d%0aLocation:%20https://evil.example", "//user@evil.example", "//evil.example%40localhost",
		"//ｅvil.example", "//evil。example", "/.gatehouse/logout", "/x/../.gatehouse/callback", "evil.example", " //evil.example"} {
		rd := rd
		cs.add("rd="+rd, http.StatusFound, func(t *testing.T) (int, string) {
			resp, _ := h1.send(t, http.MethodGet, main+"/.gatehouse/login?rd="+url.QueryEscape(rd), env.as(aliceCookie), nil)
			if loc := resp.Header.Get("Location"); loc != "/" {
				return resp.StatusCode, "Location " + loc
			}
			return resp.StatusCode, ""
		})
	}
	for _, rd := range []string{"//evil.example", "/%2F%2Fevil.example", "https://evil.example"} {
		rd := rd
		cs.add("stepup rd="+rd, http.StatusFound, func(t *testing.T) (int, string) {
			resp, _ := h1.send(t, http.MethodGet, main+"/.gatehouse/stepup?rd="+url.QueryEscape(rd), env.as(aliceCookie), nil)
			if loc := resp.Header.Get("Location"); loc != "/" {
				return resp.StatusCode, "Location " + loc
			}
			return resp.StatusCode, ""
		})
	}
	for _, start := range []string{"/%2F%2Fevil.example/x", "//evil.example%2F..%2F", "/%5C%5Cevil.example"} {
		cs.add("return path "+start+" refused before login", http.StatusBadRequest, env.status(h1, http.MethodGet, start, hdr("Accept", "text/html")))
	}
	for start, want := range map[string]int{"//evil.example/x": 200, "///evil.example/x": 200, "/..//evil.example": 403} {
		start := start
		cs.add("return path "+start, want, func(t *testing.T) (int, string) {
			b := newBrowser(t, gh)
			p := b.login(main+start, "alice")
			if p.Request.URL.Host != strings.TrimPrefix(main, "https://") {
				return p.StatusCode, "landed on " + p.Request.URL.String()
			}
			return p.StatusCode, ""
		})
	}
	cs.add("post_logout_redirect_uri from the client", http.StatusSeeOther, func(t *testing.T) (int, string) {
		b := newBrowser(t, gh)
		b.login(main+"/", "dave")
		c := "__Host-gatehouse=" + b.cookie(main, "__Host-gatehouse").Value
		resp, _ := h1.send(t, http.MethodGet, main+"/.gatehouse/logout?post_logout_redirect_uri="+url.QueryEscape("https://evil.example"), env.as(c), nil)
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if got := loc.Query().Get("post_logout_redirect_uri"); got != main+"/.gatehouse/logout" {
			return resp.StatusCode, "post_logout_redirect_uri " + got
		}
		return resp.StatusCode, ""
	})
	cs.add("redirect_uri ignores X-Forwarded-Host", http.StatusFound, func(t *testing.T) (int, string) {
		resp, _ := h1.send(t, http.MethodGet, main+"/x", hdr("Accept", "text/html", "X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "http"), nil)
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if got := loc.Query().Get("redirect_uri"); got != main+"/.gatehouse/callback" {
			return resp.StatusCode, "redirect_uri " + got
		}
		return resp.StatusCode, ""
	})
	return cs.list
}

// headerSpoofingCases: identity, assertion and policy headers a client
// sends, in any spelling, named in Connection or over HTTP/2, never reach
// the upstream; the gateway's own arrive once.
func headerSpoofingCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "header spoofing"}
	main, h1, h2, aliceCookie := env.main, env.h1, env.h2, env.aliceCookie
	spoof := func(name string, c *rawClient, kv ...string) {
		cs.add(name, http.StatusOK, func(t *testing.T) (int, string) {
			resp, body := c.send(t, http.MethodGet, main+"/work/1", env.as(aliceCookie, append(acceptJSON, kv...)...), nil)
			var e echoed
			_ = json.Unmarshal([]byte(body), &e)
			for name, vals := range e.Headers {
				n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
				if strings.Contains(name, "_") && (strings.HasPrefix(n, "x-remote") || strings.HasPrefix(n, "x-gatehouse") || strings.HasPrefix(n, "x-projects")) {
					return resp.StatusCode, "an underscore spelling arrived: " + name
				}
				switch n {
				case "x-remote-user":
					if len(vals) != 1 || vals[0] != "alice@example.com" {
						return resp.StatusCode, fmt.Sprintf("X-Remote-User %q", vals)
					}
				case "x-remote-groups":
					if len(vals) != 1 || vals[0] != "staff,payroll-users" {
						return resp.StatusCode, fmt.Sprintf("X-Remote-Groups %q", vals)
					}
				case "x-projects-role":
					if len(vals) != 1 || vals[0] != "member" {
						return resp.StatusCode, fmt.Sprintf("X-Projects-Role %q", vals)
					}
				case "x-gatehouse-assertion":
					if len(vals) != 1 || strings.Contains(vals[0], "forged") {
						return resp.StatusCode, fmt.Sprintf("X-Gatehouse-Assertion %q", vals)
					}
				}
			}
			for _, must := range []string{"X-Remote-User", "X-Remote-Groups", "X-Projects-Role", "X-Gatehouse-Assertion"} {
				if len(e.Headers[must]) != 1 {
					return resp.StatusCode, must + " missing or repeated"
				}
			}
			return resp.StatusCode, ""
		})
	}
	spoof("X-Remote-User", h1, "X-Remote-User", "mallory@example.com")
	spoof("x-remote-user twice", h1, "X-Remote-User", "a@x", "X-Remote-User", "b@x")
	spoof("X_Remote_User", h1, "X_Remote_User", "mallory@example.com")
	spoof("X-REMOTE-GROUPS", h1, "X-REMOTE-GROUPS", "admins")
	spoof("x_remote_groups", h1, "x_remote_groups", "admins")
	spoof("assertion", h1, "X-Gatehouse-Assertion", "forged.jwt.value")
	spoof("assertion underscore", h1, "X_Gatehouse_Assertion", "forged")
	spoof("policy header", h1, "X-Projects-Role", "manager")
	spoof("policy header underscore", h1, "X_Projects_Role", "manager")
	spoof("Connection drops X-Remote-User", h1, "Connection", "X-Remote-User, X-Gatehouse-Assertion")
	spoof("Connection drops underscore spelling", h1, "Connection", "x_remote_user")
	spoof("over HTTP/2", h2, "x-remote-user", "mallory@example.com", "x-projects-role", "manager")
	cs.add("public path strips too", http.StatusOK, func(t *testing.T) (int, string) {
		resp, body := h1.send(t, http.MethodGet, main+"/static/a.css", hdr("X-Remote-User", "mallory", "X_Gatehouse_Assertion", "forged"), nil)
		if strings.Contains(strings.ToLower(body), "mallory") || strings.Contains(body, "forged") {
			return resp.StatusCode, "a spoofed header reached the upstream on a public path"
		}
		return resp.StatusCode, ""
	})
	return cs.list
}

// foreignHeaderCases: other gateways' identity headers (issue 11) are
// removed on every path, in any spelling, whatever Connection says, over
// HTTP/1.1 and HTTP/2.
func foreignHeaderCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "header spoofing"}
	main, h1, h2, aliceCookie := env.main, env.h1, env.h2, env.aliceCookie
	foreign := []string{"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Preferred-Username",
		"X-Auth-Request-User", "X-Auth-Request-Email", "Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name",
		"X-Remote-Role", "X-WEBAUTH-USER", "X-Authenticated-User", "X-Goog-Authenticated-User-Email", "X-Ms-Client-Principal-Name",
		"Cf-Access-Authenticated-User-Email", "X-Pomerium-Claim-Email", "X-Gatehouse-User", "X-Amzn-Oidc-Identity"}
	noForeign := func(path string, c *rawClient, cookie string, spell func(string) string) func(*testing.T) (int, string) {
		return func(t *testing.T) (int, string) {
			h := env.as(cookie, acceptJSON...)
			var names []string
			for _, n := range foreign {
				h[spell(n)] = []string{"mallory@evil.example"}
				names = append(names, spell(n))
			}
			if c == h1 {
				h["Connection"] = []string{"keep-alive, " + strings.Join(names[:4], ", ")}
			}
			resp, body := c.send(t, http.MethodGet, main+path, h, nil)
			if strings.Contains(body, "mallory@evil.example") {
				return resp.StatusCode, "a foreign identity header reached the upstream: " + body
			}
			return resp.StatusCode, ""
		}
	}
	same := func(s string) string { return s }
	under := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "-", "_")) }
	cs.add("foreign identity headers", http.StatusOK, noForeign("/work/1", h1, aliceCookie, same))
	cs.add("foreign identity headers, underscores", http.StatusOK, noForeign("/work/1", h1, aliceCookie, under))
	cs.add("foreign identity headers, upper case", http.StatusOK, noForeign("/work/1", h1, aliceCookie, strings.ToUpper))
	cs.add("foreign identity headers over HTTP/2", http.StatusOK, noForeign("/work/1", h2, aliceCookie, strings.ToLower))
	cs.add("foreign identity headers on a public path", http.StatusOK, noForeign("/static/a.css", h1, "", same))
	return cs.list
}

// pathCases: spellings of a step-up path (401) and a policy-denied path
// (403) are matched as the path they mean; ambiguous ones are refused
// (400).
func pathCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "path tricks"}
	h1, aliceCookie := env.h1, env.aliceCookie
	// /work/secret/* needs a step-up (alice has a password session): 401.
	// /admin is denied by the policy (no grant): 403. Ambiguous forms: 400.
	for path, want := range map[string]int{
		"/work/secret/plan": 401, "/work/secret": 401, "/WORK/Secret/plan": 401, "//work/secret/plan": 401, "/work//secret/plan": 401,
		"/work/x/../secret/plan": 401, "/%77ork/secret/plan": 401, "/work/%73ecret/plan": 401, "/work/./secret/plan": 401,
		"/work/%2e/secret/plan": 401, "/.gatehouse/../work/secret/plan": 401, "/static/../work/secret/plan": 401,
		"/work/secret%2fplan": 400, "/work/secret%2Fplan": 400, "/work/secret;x/plan": 400, "/work/secret/plan;jsessionid=1": 400,
		"/work/secret./plan": 400, "/work/secret%2e/plan": 400, "/work/secret%20/plan": 400, "/work/secret%5cplan": 400,
		"/work/secret%00/plan": 400, "/work/secret%252fplan": 400, "/work/secret%3bx/plan": 400,
		"/admin": 403, "/admin/": 403, "/ADMIN": 403, "//admin": 403, "/admin/../admin/x": 403, "/%2e/admin": 403,
		"/.gatehouse/../admin": 403, "/x/..%2fadmin": 400, "/admin%2f": 400, "/admin;x": 400, "/admin.": 400, "/admin%2e": 400,
		// Raw-target checks before dot segments (issue 11): path parameters
		// ahead of "..", overlong UTF-8 dots and slashes, C1 controls.
		"/static;/../admin": 400, "/static/x;/../../admin": 400, "/x/%c0%ae%c0%ae/admin": 400, "/x/%e0%80%ae%e0%80%ae/admin": 400,
		"/x/%c0%ae%c0%ae%c0%afadmin": 400, "/static/%c0%ae%c0%ae/work/secret/plan": 400, "/x/%c2%85/admin": 400, "/x/%ed%a0%80": 400,
		"/x/%ff/admin": 400, "/work/caf%C3%A9": 200,
	} {
		cs.add(path, want, env.reached(h1, http.MethodGet, path, env.as(aliceCookie, acceptJSON...)))
	}
	return cs.list
}

// methodCases: other methods, WebSocket upgrades and HTTP/2 get the same
// answer as a GET, and reach the upstream only when allowed.
func methodCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "methods"}
	h1, h2, aliceCookie := env.h1, env.h2, env.aliceCookie
	for _, m := range []string{"HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "PATCH", "PROPFIND"} {
		cs.add(m+" without a session", 401, env.reached(h1, m, "/work/1", hdr(acceptJSON...)))
		cs.add(m+" to a step-up path", 401, env.reached(h1, m, "/work/secret/plan", env.as(aliceCookie, acceptJSON...)))
		cs.add(m+" to a policy-denied path", 403, env.reached(h1, m, "/admin/", env.as(aliceCookie, acceptJSON...)))
	}
	cs.add("WebSocket upgrade without a session", 401, env.reached(h1, http.MethodGet, "/work/ws", hdr(webSocketHandshake...)))
	cs.add("WebSocket upgrade to a step-up path", 401, env.reached(h1, http.MethodGet, "/work/secret/ws", env.as(aliceCookie, webSocketHandshake...)))
	cs.add("WebSocket upgrade to a policy-denied path", 403, env.reached(h1, http.MethodGet, "/admin/ws", env.as(aliceCookie, webSocketHandshake...)))
	cs.add("HTTP/2 without a session", 401, env.reached(h2, http.MethodGet, "/work/1", hdr(acceptJSON...)))
	cs.add("HTTP/2 to a step-up path", 401, env.reached(h2, http.MethodGet, "//work/secret/plan", env.as(aliceCookie, acceptJSON...)))
	cs.add("HTTP/2 to a policy-denied path", 403, env.reached(h2, http.MethodGet, "/ADMIN", env.as(aliceCookie, acceptJSON...)))
	cs.add("HTTP/2 HEAD", 401, env.reached(h2, http.MethodHead, "/work/1", hdr(acceptJSON...)))
	cs.add("HTTP/2 allowed", 200, env.reached(h2, http.MethodGet, "/work/1", env.as(aliceCookie, acceptJSON...)))
	return cs.list
}

// upgradeCases: cross-site WebSocket hijacking (issue 11): an upgrade
// from another origin never reaches the app, whatever else it carries.
func upgradeCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "upgrades"}
	main, h1, gh, evilSite, aliceCookie := env.main, env.h1, env.gh, env.evilSite, env.aliceCookie
	wsFrom := func(origin ...string) http.Header {
		h := env.as(aliceCookie, webSocketHandshake...)
		h["Origin"] = origin
		if len(origin) == 0 {
			delete(h, "Origin")
		}
		return h
	}
	cs.add("WebSocket from the site's own origin", 101, env.reached(h1, http.MethodGet, "/work/ws", wsFrom(main)))
	cs.add("WebSocket without Origin (not a browser)", 101, env.reached(h1, http.MethodGet, "/work/ws", wsFrom()))
	cs.add("WebSocket from the listed partner origin", 101, env.reached(h1, http.MethodGet, "/work/ws", wsFrom("https://partner.example")))
	for name, origin := range map[string][]string{
		"another site": {"https://evil.example"}, "another port of this host": {evilSite}, "this host over http": {strings.Replace(main, "https:", "http:", 1)},
		"Origin null": {"null"}, "an empty Origin": {""}, "two Origins": {main, "https://evil.example"},
		"a look-alike host": {main + ".evil.example"}, "Origin with a path": {main + "/x"},
	} {
		cs.add("WebSocket from "+name, 403, env.reached(h1, http.MethodGet, "/work/ws", wsFrom(origin...)))
	}
	cs.add("h2c from another site", 403, env.reached(h1, http.MethodGet, "/work/x", env.as(aliceCookie, "Origin", "https://evil.example",
		"Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")))
	cs.add("cross-origin upgrade is audited", 403, func(t *testing.T) (int, string) {
		resp, _ := h1.send(t, http.MethodGet, main+"/work/ws-audit", wsFrom("https://evil.example"), nil)
		if gh.waitAudit(t, func(l map[string]any) bool {
			return l["path"] == "/work/ws-audit" && l["reason"] == "cross_origin_upgrade"
		}) == nil {
			return resp.StatusCode, "no audit line with reason cross_origin_upgrade"
		}
		return resp.StatusCode, ""
	})
	return cs.list
}

// assertionCases: the signed assertion's issuer (issue 11): the site
// answers two names; whatever Host a signed-in client sends, the
// assertion's iss is the configured one.
func assertionCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "assertion"}
	main, h1, alt, aliceCookie := env.main, env.h1, env.alt, env.aliceCookie
	for _, host := range []string{strings.TrimPrefix(alt, "https://"), "LOCALHOST:" + mustParse(main).Port()} {
		cs.add("iss with Host "+host, 200, func(t *testing.T) (int, string) {
			req, _ := http.NewRequest(http.MethodGet, main+"/work/1", nil)
			req.Host = host
			req.Header.Set("Cookie", aliceCookie)
			req.Header.Set("Accept", "application/json")
			resp, err := h1.c.Do(req)
			if err != nil {
				return 0, err.Error()
			}
			defer resp.Body.Close()
			var e echoed
			_ = json.NewDecoder(resp.Body).Decode(&e)
			toks := e.Headers["X-Gatehouse-Assertion"]
			if len(toks) != 1 {
				return resp.StatusCode, "no assertion"
			}
			parts := strings.Split(toks[0], ".")
			payload, _ := base64.RawURLEncoding.DecodeString(parts[min(1, len(parts)-1)])
			var claims struct{ Iss string }
			_ = json.Unmarshal(payload, &claims)
			if claims.Iss != main {
				return resp.StatusCode, "iss " + claims.Iss
			}
			return resp.StatusCode, ""
		})
	}
	return cs.list
}

// hostCases: another Host is not this site, and X-Forwarded-For does not
// change the client's address.
func hostCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "host"}
	main, h1, gh, up, aliceCookie := env.main, env.h1, env.gh, env.up, env.aliceCookie
	cs.add("another Host is not this site", 200, func(t *testing.T) (int, string) {
		before := up.hits.Load()
		req, _ := http.NewRequest(http.MethodGet, main+"/work/1", nil)
		req.Host = "evil.example"
		req.Header.Set("Cookie", aliceCookie)
		resp, err := h1.c.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		resp.Body.Close()
		if up.hits.Load() != before {
			return resp.StatusCode, "a request for another host was proxied"
		}
		return resp.StatusCode, ""
	})
	cs.add("X-Forwarded-For does not change remote_ip", 200, func(t *testing.T) (int, string) {
		resp, _ := h1.send(t, http.MethodGet, main+"/work/xff", env.as(aliceCookie, "X-Forwarded-For", "10.9.8.7", "Accept", "application/json"), nil)
		gh.waitAudit(t, func(l map[string]any) bool { return l["path"] == "/work/xff" })
		for _, l := range gh.auditLines() {
			if l["path"] == "/work/xff" {
				in, _ := l["input"].(map[string]any)
				req, _ := in["request"].(map[string]any)
				if req["remote_ip"] != "127.0.0.1" {
					return resp.StatusCode, fmt.Sprintf("remote_ip %v", req["remote_ip"])
				}
				return resp.StatusCode, ""
			}
		}
		return resp.StatusCode, "no audit line"
	})
	return cs.list
}

// cookieCases: many, oversized, malformed, duplicated (shadowing) and
// foreign session cookies.
func cookieCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "cookies"}
	main, h1, gh, up, evilSite, aliceCookie, bobCookie := env.main, env.h1, env.gh, env.up, env.evilSite, env.aliceCookie, env.bobCookie
	junk := func(n int, size int) string {
		var parts []string
		for i := range n {
			parts = append(parts, fmt.Sprintf("junk%d=%s", i, strings.Repeat("x", size)))
		}
		return strings.Join(parts, "; ")
	}
	cs.add("100 other cookies and a valid one", 200, env.reached(h1, http.MethodGet, "/work/1", hdr("Cookie", junk(100, 20)+"; "+aliceCookie, "Accept", "application/json")))
	// Cookie shadowing (issue 11): a name sent twice is no session, never
	// the first or the last copy.
	dup := func(name string, want int, cookies ...string) {
		cs.add(name, want, func(t *testing.T) (int, string) {
			before := up.hits.Load()
			h := hdr("Accept", "application/json")
			h["Cookie"] = cookies
			resp, body := h1.send(t, http.MethodGet, main+"/work/1", h, nil)
			if up.hits.Load() != before {
				return resp.StatusCode, "the upstream was reached"
			}
			if !strings.Contains(body, `"reason":"duplicate_cookie"`) {
				return resp.StatusCode, "reason is not duplicate_cookie: " + body
			}
			return resp.StatusCode, ""
		})
	}
	bobSession := strings.TrimPrefix(bobCookie, "__Host-gatehouse=")
	dup("a forged session cookie before the valid one", 401, "__Host-gatehouse=AAAA; "+aliceCookie)
	dup("a forged session cookie after the valid one", 401, aliceCookie+"; __Host-gatehouse=AAAA")
	dup("another user's session before mine", 401, "__Host-gatehouse="+bobSession+"; "+aliceCookie)
	dup("another user's session in a second Cookie header", 401, aliceCookie, "__Host-gatehouse="+bobSession)
	dup("the same session twice", 401, aliceCookie+"; "+aliceCookie)
	dup("a copy with spaces around its name", 401, aliceCookie+";  __Host-gatehouse =AAAA")
	dup("an ID-token cookie twice", 401, aliceCookie+"; __Secure-gatehouse_idt=a; __Secure-gatehouse_idt=b")
	dup("20 forged session cookies", 401, strings.Repeat("__Host-gatehouse=QUFB; ", 20))
	cs.add("a duplicate page for a navigation, not a login loop", 401, func(t *testing.T) (int, string) {
		h := hdr("Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document", "Accept", "text/html")
		h["Cookie"] = []string{"__Host-gatehouse=" + bobSession + "; " + aliceCookie}
		resp, body := h1.send(t, http.MethodGet, main+"/work/1", h, nil)
		if resp.Header.Get("Location") != "" || !strings.Contains(body, "cookie sent twice") {
			return resp.StatusCode, "Location " + resp.Header.Get("Location")
		}
		return resp.StatusCode, ""
	})
	cs.add("an 8 KB session cookie", 401, env.reached(h1, http.MethodGet, "/work/1", hdr("Cookie", "__Host-gatehouse="+strings.Repeat("A", 8192), "Accept", "application/json")))
	cs.add("bad base64", 401, env.reached(h1, http.MethodGet, "/work/1", hdr("Cookie", "__Host-gatehouse=%%%***", "Accept", "application/json")))
	cs.add("a value with quotes", 401, env.reached(h1, http.MethodGet, "/work/1", hdr("Cookie", `__Host-gatehouse="MTIz"`, "Accept", "application/json")))
	cs.add("another app's cookie", 401, func(t *testing.T) (int, string) {
		b := newBrowser(t, gh)
		b.navigate(evilSite + "/")
		c := b.cookie(evilSite, "__Host-evil")
		if c == nil {
			return 0, "no evil-site cookie"
		}
		resp, _ := h1.send(t, http.MethodGet, main+"/work/1", hdr("Cookie", "__Host-gatehouse="+c.Value, "Accept", "application/json"), nil)
		return resp.StatusCode, ""
	})
	cs.add("8 KB of other cookies", 401, env.reached(h1, http.MethodGet, "/work/1", hdr("Cookie", junk(8, 1000), "Accept", "application/json")))
	cs.add("a header block over the server's limit", 431, env.reached(h1, http.MethodGet, "/work/1", hdr("Cookie", junk(64, 1000), "Accept", "application/json")))
	cs.add("the login cookie as a session", 401, env.reached(h1, http.MethodGet, "/work/1", hdr("Cookie", "__Host-gatehouse="+env.alice.cookie(main+"/.gatehouse/", "__Secure-gatehouse_idt").Value, "Accept", "application/json")))
	return cs.list
}

// callbackCases: callback abuse with the certified IdP: bad states, a
// replayed code, an IdP error, another browser's state, a replay.
func callbackCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "callback"}
	main, h1, gh := env.main, env.h1, env.gh
	for name, q := range map[string]string{
		"no state": "code=abc", "empty state": "code=abc&state=", "malformed state": "code=abc&state=..%2F..%2F",
		"unknown state": "code=abc&state=AAAAAAAAAAAAAAAAAAAAAAAAAA", "two states": "code=abc&state=AAAAAAAAAAAAAAAAAAAAAAAAAA&state=BBBBBBBBBBBBBBBBBBBBBBBBBB",
	} {
		cs.add(name, 400, env.status(h1, http.MethodGet, "/.gatehouse/callback?"+q, hdr()))
	}
	cs.add("POST", 405, env.status(h1, http.MethodPost, "/.gatehouse/callback", hdr()))
	cs.add("code replayed in the attacker's own login", 401, func(t *testing.T) (int, string) {
		victim := newBrowser(t, gh)
		cb := loginUntilCallbackURL(t, victim, main+"/v", "alice")
		victim.navigate(cb) // the victim completes it
		code := mustParse(cb).Query().Get("code")
		attacker := newBrowser(t, gh)
		mine := loginUntilCallbackURL(t, attacker, main+"/a", "bob")
		u := mustParse(mine)
		q := u.Query()
		q.Set("code", code)
		u.RawQuery = q.Encode()
		p := attacker.navigate(u.String())
		if attacker.cookie(main, "__Host-gatehouse") != nil {
			return p.StatusCode, "the attacker got a session"
		}
		return p.StatusCode, ""
	})
	cs.add("IdP error response", 401, func(t *testing.T) (int, string) {
		b := newBrowser(t, gh)
		cb := mustParse(loginUntilCallbackURL(t, b, main+"/e", "alice"))
		// The IdP names itself in errors too (RFC 9207).
		return b.navigate(main + "/.gatehouse/callback?error=access_denied&error_description=%3Cscript%3E&state=" + cb.Query().Get("state") +
			"&iss=" + url.QueryEscape(cb.Query().Get("iss"))).StatusCode, ""
	})
	cs.add("an answer without iss from an IdP that always sends it", 400, func(t *testing.T) (int, string) {
		b := newBrowser(t, gh)
		cb := mustParse(loginUntilCallbackURL(t, b, main+"/i", "alice"))
		q := cb.Query()
		q.Del("iss")
		cb.RawQuery = q.Encode()
		p := b.navigate(cb.String())
		if b.cookie(main, "__Host-gatehouse") != nil {
			return p.StatusCode, "a session was made"
		}
		return p.StatusCode, ""
	})
	cs.add("a state from another browser", 400, func(t *testing.T) (int, string) {
		victim := newBrowser(t, gh)
		cb := loginUntilCallbackURL(t, victim, main+"/v2", "alice")
		return newBrowser(t, gh).navigate(cb).StatusCode, ""
	})
	cs.add("a replayed callback", 400, func(t *testing.T) (int, string) {
		b := newBrowser(t, gh)
		cb := loginUntilCallbackURL(t, b, main+"/r", "alice")
		b.navigate(cb)
		return b.navigate(cb).StatusCode, ""
	})
	return cs.list
}

// forgedTokenCases: forged ID tokens from an IdP that lies never make a
// session; made-up key ids do not make it fetch the key set again.
func forgedTokenCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "forged tokens"}
	gh, evil, evilSite := env.gh, env.evil, env.evilSite
	for _, mode := range []string{"wrong_nonce", "no_nonce", "other_client", "two_audiences", "other_issuer", "expired", "future_iat",
		"no_sub", "unknown_key", "alg_none", "hs256_public_key", "error",
		// issue 11: auth_time is required (max_age is always sent), and no
		// time may be more than 5 s ahead.
		"no_auth_time", "future_auth_time", "future_iat_small", "random_kid"} {
		mode := mode
		cs.add(mode, 401, func(t *testing.T) (int, string) {
			evil.setMode(mode)
			defer evil.setMode("ok")
			b := newBrowser(t, gh)
			p := b.navigate(evilSite + "/x")
			if b.cookie(evilSite, "__Host-evil") != nil {
				return p.StatusCode, "a session was made"
			}
			return p.StatusCode, ""
		})
	}
	cs.add("20 tokens with made-up key ids fetch the key set at most once", 401, func(t *testing.T) (int, string) {
		evil.setMode("random_kid")
		defer evil.setMode("ok")
		before := evil.jwksHits.Load()
		status := 0
		for range 20 {
			b := newBrowser(t, gh)
			status = b.navigate(evilSite + "/x").StatusCode
			if b.cookie(evilSite, "__Host-evil") != nil {
				return status, "a session was made"
			}
		}
		if n := evil.jwksHits.Load() - before; n > 1 {
			return status, fmt.Sprintf("%d key-set fetches for 20 forged logins", n)
		}
		return status, ""
	})
	cs.add("control: a good token", 200, func(t *testing.T) (int, string) {
		evil.setMode("ok")
		return newBrowser(t, gh).navigate(evilSite + "/x").StatusCode, ""
	})
	return cs.list
}

// stepUpDowngradeCases: a step-up login that does not prove MFA, is
// stale, is another user's or comes from the future does not open a
// step-up path; a fresh MFA login (the control) does.
func stepUpDowngradeCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "step-up downgrade"}
	gh, evil, evilSite := env.gh, env.evil, env.evilSite
	for mode, want := range map[string]int{"ok": 403, "stale_mfa": 403, "other_user": 403, "mfa": 200, "future_mfa": 403} {
		mode, want := mode, want
		cs.add(mode, want, func(t *testing.T) (int, string) {
			evil.setMode("ok")
			b := newBrowser(t, gh)
			mustStatus(t, b.navigate(evilSite+"/"), http.StatusOK)
			evil.setMode(mode)
			defer evil.setMode("ok")
			return b.navigate(evilSite + "/admin/").StatusCode, ""
		})
	}
	return cs.list
}

// csrfCases: the request, access and approval forms refuse posts without
// this session's token or from another site.
func csrfCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "csrf"}
	h1, aliceCookie, bobCookie := env.h1, env.aliceCookie, env.bobCookie
	cs.add("request without a token", 403, env.post("/.gatehouse/request", bobCookie, env.request(func(v url.Values) { v.Del("csrf") })))
	cs.add("request with another session's token", 403, env.post("/.gatehouse/request", bobCookie, env.request(func(v url.Values) { v.Set("csrf", env.carolCSRF) })))
	cs.add("request from another site", 403, env.post("/.gatehouse/request", bobCookie, env.request(nil), "Sec-Fetch-Site", "cross-site"))
	cs.add("request with a foreign Origin", 403, env.post("/.gatehouse/request", bobCookie, env.request(nil), "Origin", "https://evil.example"))
	cs.add("request with Origin null, cross-site", 403, env.post("/.gatehouse/request", bobCookie, env.request(nil), "Origin", "null", "Sec-Fetch-Site", "cross-site"))
	cs.add("my access without a token", 403, env.post("/.gatehouse/access", bobCookie, url.Values{"grant": {"x"}, "action": {"end"}}))
	cs.add("approvals without a token", 403, env.post("/.gatehouse/approvals", aliceCookie, url.Values{"request": {"x"}, "action": {"approve"}}))
	cs.add("request without a session", 401, env.post("/.gatehouse/request", "", env.request(nil)))
	cs.add("GET on the request endpoint", 405, env.status(h1, http.MethodGet, "/.gatehouse/request", env.as(bobCookie)))
	return cs.list
}

// forgedRequestCases: a request for an offer never made or made to
// another user, or with a bad duration or an oversized form, is refused.
func forgedRequestCases(env *hostileEnv) []hostileCase {
	cs := hostileCases{group: "forged requests"}
	bobCookie := env.bobCookie
	offer := env.bobForm.Get("offer")
	cs.add("an offer never made (tampered)", 403, env.post("/.gatehouse/request", bobCookie, env.request(func(v url.Values) { v.Set("offer", offer[:30]+flip(offer[30])+offer[31:]) })))
	cs.add("another user's offer", 403, env.post("/.gatehouse/request", bobCookie, env.request(func(v url.Values) { v.Set("offer", env.carolOffer) })))
	cs.add("no offer", 403, env.post("/.gatehouse/request", bobCookie, env.request(func(v url.Values) { v.Del("offer") })))
	for d, want := range map[string]int{"9h": 400, "8h0m1s": 400, "-1h": 400, "0s": 400, "9999999999h": 400, "1e9h": 400, "NaN": 400,
		"": 400, "1h;rm": 400, "0.5s": 400} {
		d := d
		cs.add("duration "+d, want, env.post("/.gatehouse/request", bobCookie, env.request(func(v url.Values) { v.Set("duration", d) })))
	}
	cs.add("a 20 KB form", 403, env.post("/.gatehouse/request", bobCookie, env.request(func(v url.Values) { v.Set("reason", strings.Repeat("x", 20000)) })))
	return cs.list
}

// flip returns another base64 character than c, so a "tampered" value
// really differs from the original.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func mustParse(s string) *url.URL {
	u, _ := url.Parse(s)
	return u
}

// loginUntilCallbackURL starts a login at start, signs in at the IdP as
// user, and stops before the callback, returning its URL.
func loginUntilCallbackURL(t *testing.T, b *browser, start, user string) string {
	t.Helper()
	p := b.navigate(start)
	if !isLoginForm(p) {
		// The IdP's single sign-on answered at once.
		for _, h := range b.hops {
			if loc := h.Header.Get("Location"); strings.Contains(loc, "/.gatehouse/callback?") {
				return loc
			}
		}
		t.Fatalf("no login form and no callback for %s", start)
	}
	m := formActionRE.FindStringSubmatch(p.Body)
	action, _ := p.Request.URL.Parse(m[1])
	c := b.noRedirects()
	next, method := action.String(), http.MethodPost
	body := url.Values{"login": {user}, "password": {user + "-pw"}}.Encode()
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
		if strings.Contains(loc.Path, "/.gatehouse/callback") {
			return loc.String()
		}
		next, method, body = loc.String(), http.MethodGet, ""
	}
	t.Fatal("never reached the callback")
	return ""
}
