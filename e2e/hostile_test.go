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

func TestHostile(t *testing.T) {
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

	as := func(cookie string, kv ...string) http.Header {
		h := hdr(kv...)
		if cookie != "" {
			h.Set("Cookie", cookie)
		}
		return h
	}
	api := []string{"Accept", "application/json"}
	status := func(c *rawClient, method, path string, h http.Header) func(*testing.T) (int, string) {
		return func(t *testing.T) (int, string) {
			resp, _ := c.send(t, method, main+path, h, nil)
			return resp.StatusCode, ""
		}
	}
	// reached reports whether a request got to the upstream.
	reached := func(c *rawClient, method, path string, h http.Header) func(*testing.T) (int, string) {
		return func(t *testing.T) (int, string) {
			before := up.hits.Load()
			resp, _ := c.send(t, method, main+path, h, nil)
			if up.hits.Load() != before && resp.StatusCode >= 400 {
				return resp.StatusCode, "the upstream was reached"
			}
			if up.hits.Load() == before && resp.StatusCode < 300 {
				return resp.StatusCode, "answered without the upstream"
			}
			return resp.StatusCode, ""
		}
	}

	var cases []hostileCase
	add := func(group, name string, want int, run func(*testing.T) (int, string)) {
		cases = append(cases, hostileCase{group, name, want, run})
	}

	// --- Open redirects -------------------------------------------------
	for _, rd := range []string{"//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example", "/%5Cevil.example", "/%5cevil.example",
		"/%2F%2Fevil.example", "/%2f%2fevil.example", "/%252F%252Fevil.example", "https:evil.example", "https://evil.example",
		"http:/evil.example", "HTTPS://evil.example", "javascript:alert(1)", "data:text/html,x", "/\t/evil.example", "/\r\n/evil.example",
		"/%09/evil.example", "/%0d%0aLocation:%20https://evil.example", "//user@evil.example", "//evil.example%40localhost",
		"//ｅvil.example", "//evil。example", "/.gatehouse/logout", "/x/../.gatehouse/callback", "evil.example", " //evil.example"} {
		rd := rd
		add("open redirect", "rd="+rd, http.StatusFound, func(t *testing.T) (int, string) {
			resp, _ := h1.send(t, http.MethodGet, main+"/.gatehouse/login?rd="+url.QueryEscape(rd), as(aliceCookie), nil)
			if loc := resp.Header.Get("Location"); loc != "/" {
				return resp.StatusCode, "Location " + loc
			}
			return resp.StatusCode, ""
		})
	}
	for _, rd := range []string{"//evil.example", "/%2F%2Fevil.example", "https://evil.example"} {
		rd := rd
		add("open redirect", "stepup rd="+rd, http.StatusFound, func(t *testing.T) (int, string) {
			resp, _ := h1.send(t, http.MethodGet, main+"/.gatehouse/stepup?rd="+url.QueryEscape(rd), as(aliceCookie), nil)
			if loc := resp.Header.Get("Location"); loc != "/" {
				return resp.StatusCode, "Location " + loc
			}
			return resp.StatusCode, ""
		})
	}
	for _, start := range []string{"/%2F%2Fevil.example/x", "//evil.example%2F..%2F", "/%5C%5Cevil.example"} {
		add("open redirect", "return path "+start+" refused before login", http.StatusBadRequest, status(h1, http.MethodGet, start, hdr("Accept", "text/html")))
	}
	for start, want := range map[string]int{"//evil.example/x": 200, "///evil.example/x": 200, "/..//evil.example": 403} {
		start := start
		add("open redirect", "return path "+start, want, func(t *testing.T) (int, string) {
			b := newBrowser(t, gh)
			p := b.login(main+start, "alice")
			if p.Request.URL.Host != strings.TrimPrefix(main, "https://") {
				return p.StatusCode, "landed on " + p.Request.URL.String()
			}
			return p.StatusCode, ""
		})
	}
	add("open redirect", "post_logout_redirect_uri from the client", http.StatusSeeOther, func(t *testing.T) (int, string) {
		b := newBrowser(t, gh)
		b.login(main+"/", "dave")
		c := "__Host-gatehouse=" + b.cookie(main, "__Host-gatehouse").Value
		resp, _ := h1.send(t, http.MethodGet, main+"/.gatehouse/logout?post_logout_redirect_uri="+url.QueryEscape("https://evil.example"), as(c), nil)
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if got := loc.Query().Get("post_logout_redirect_uri"); got != main+"/.gatehouse/logout" {
			return resp.StatusCode, "post_logout_redirect_uri " + got
		}
		return resp.StatusCode, ""
	})
	add("open redirect", "redirect_uri ignores X-Forwarded-Host", http.StatusFound, func(t *testing.T) (int, string) {
		resp, _ := h1.send(t, http.MethodGet, main+"/x", hdr("Accept", "text/html", "X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "http"), nil)
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if got := loc.Query().Get("redirect_uri"); got != main+"/.gatehouse/callback" {
			return resp.StatusCode, "redirect_uri " + got
		}
		return resp.StatusCode, ""
	})

	// --- Header spoofing ---------------------------------------------------
	spoof := func(name string, c *rawClient, kv ...string) {
		add("header spoofing", name, http.StatusOK, func(t *testing.T) (int, string) {
			resp, body := c.send(t, http.MethodGet, main+"/work/1", as(aliceCookie, append(api, kv...)...), nil)
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
	// Other gateways' identity headers (issue 11): removed on every path,
	// in any spelling, whatever Connection says, over HTTP/1.1 and HTTP/2.
	foreign := []string{"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Preferred-Username",
		"X-Auth-Request-User", "X-Auth-Request-Email", "Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name",
		"X-Remote-Role", "X-WEBAUTH-USER", "X-Authenticated-User", "X-Goog-Authenticated-User-Email", "X-Ms-Client-Principal-Name",
		"Cf-Access-Authenticated-User-Email", "X-Pomerium-Claim-Email", "X-Gatehouse-User", "X-Amzn-Oidc-Identity"}
	noForeign := func(path string, c *rawClient, cookie string, spell func(string) string) func(*testing.T) (int, string) {
		return func(t *testing.T) (int, string) {
			h := as(cookie, api...)
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
	add("header spoofing", "foreign identity headers", http.StatusOK, noForeign("/work/1", h1, aliceCookie, same))
	add("header spoofing", "foreign identity headers, underscores", http.StatusOK, noForeign("/work/1", h1, aliceCookie, under))
	add("header spoofing", "foreign identity headers, upper case", http.StatusOK, noForeign("/work/1", h1, aliceCookie, strings.ToUpper))
	add("header spoofing", "foreign identity headers over HTTP/2", http.StatusOK, noForeign("/work/1", h2, aliceCookie, strings.ToLower))
	add("header spoofing", "foreign identity headers on a public path", http.StatusOK, noForeign("/static/a.css", h1, "", same))
	add("header spoofing", "public path strips too", http.StatusOK, func(t *testing.T) (int, string) {
		resp, body := h1.send(t, http.MethodGet, main+"/static/a.css", hdr("X-Remote-User", "mallory", "X_Gatehouse_Assertion", "forged"), nil)
		if strings.Contains(strings.ToLower(body), "mallory") || strings.Contains(body, "forged") {
			return resp.StatusCode, "a spoofed header reached the upstream on a public path"
		}
		return resp.StatusCode, ""
	})

	// --- Path tricks --------------------------------------------------------
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
		add("path tricks", path, want, reached(h1, http.MethodGet, path, as(aliceCookie, api...)))
	}

	// --- Methods and protocols ---------------------------------------------
	for _, m := range []string{"HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "PATCH", "PROPFIND"} {
		add("methods", m+" without a session", 401, reached(h1, m, "/work/1", hdr(api...)))
		add("methods", m+" to a step-up path", 401, reached(h1, m, "/work/secret/plan", as(aliceCookie, api...)))
		add("methods", m+" to a policy-denied path", 403, reached(h1, m, "/admin/", as(aliceCookie, api...)))
	}
	ws := []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
	add("methods", "WebSocket upgrade without a session", 401, reached(h1, http.MethodGet, "/work/ws", hdr(ws...)))
	add("methods", "WebSocket upgrade to a step-up path", 401, reached(h1, http.MethodGet, "/work/secret/ws", as(aliceCookie, ws...)))
	add("methods", "WebSocket upgrade to a policy-denied path", 403, reached(h1, http.MethodGet, "/admin/ws", as(aliceCookie, ws...)))
	// Cross-site WebSocket hijacking (issue 11): an upgrade from another
	// origin never reaches the app, whatever else it carries.
	wsFrom := func(origin ...string) http.Header {
		h := as(aliceCookie, ws...)
		h["Origin"] = origin
		if len(origin) == 0 {
			delete(h, "Origin")
		}
		return h
	}
	add("upgrades", "WebSocket from the site's own origin", 101, reached(h1, http.MethodGet, "/work/ws", wsFrom(main)))
	add("upgrades", "WebSocket without Origin (not a browser)", 101, reached(h1, http.MethodGet, "/work/ws", wsFrom()))
	add("upgrades", "WebSocket from the listed partner origin", 101, reached(h1, http.MethodGet, "/work/ws", wsFrom("https://partner.example")))
	for name, origin := range map[string][]string{
		"another site": {"https://evil.example"}, "another port of this host": {evilSite}, "this host over http": {strings.Replace(main, "https:", "http:", 1)},
		"Origin null": {"null"}, "an empty Origin": {""}, "two Origins": {main, "https://evil.example"},
		"a look-alike host": {main + ".evil.example"}, "Origin with a path": {main + "/x"},
	} {
		add("upgrades", "WebSocket from "+name, 403, reached(h1, http.MethodGet, "/work/ws", wsFrom(origin...)))
	}
	add("upgrades", "h2c from another site", 403, reached(h1, http.MethodGet, "/work/x", as(aliceCookie, "Origin", "https://evil.example",
		"Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")))
	add("upgrades", "cross-origin upgrade is audited", 403, func(t *testing.T) (int, string) {
		resp, _ := h1.send(t, http.MethodGet, main+"/work/ws-audit", wsFrom("https://evil.example"), nil)
		if gh.waitAudit(t, func(l map[string]any) bool {
			return l["path"] == "/work/ws-audit" && l["reason"] == "cross_origin_upgrade"
		}) == nil {
			return resp.StatusCode, "no audit line with reason cross_origin_upgrade"
		}
		return resp.StatusCode, ""
	})
	add("methods", "HTTP/2 without a session", 401, reached(h2, http.MethodGet, "/work/1", hdr(api...)))
	add("methods", "HTTP/2 to a step-up path", 401, reached(h2, http.MethodGet, "//work/secret/plan", as(aliceCookie, api...)))
	add("methods", "HTTP/2 to a policy-denied path", 403, reached(h2, http.MethodGet, "/ADMIN", as(aliceCookie, api...)))
	add("methods", "HTTP/2 HEAD", 401, reached(h2, http.MethodHead, "/work/1", hdr(api...)))
	add("methods", "HTTP/2 allowed", 200, reached(h2, http.MethodGet, "/work/1", as(aliceCookie, api...)))

	// --- The signed assertion's issuer (issue 11) --------------------------
	// The site answers two names; whatever Host a signed-in client sends,
	// the assertion's iss is the configured one.
	for _, host := range []string{strings.TrimPrefix(alt, "https://"), "LOCALHOST:" + mustParse(main).Port()} {
		add("assertion", "iss with Host "+host, 200, func(t *testing.T) (int, string) {
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

	// --- Host and X-Forwarded-* ---------------------------------------------
	add("host", "another Host is not this site", 200, func(t *testing.T) (int, string) {
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
	add("host", "X-Forwarded-For does not change remote_ip", 200, func(t *testing.T) (int, string) {
		resp, _ := h1.send(t, http.MethodGet, main+"/work/xff", as(aliceCookie, "X-Forwarded-For", "10.9.8.7", "Accept", "application/json"), nil)
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

	// --- Cookies ------------------------------------------------------------
	junk := func(n int, size int) string {
		var parts []string
		for i := range n {
			parts = append(parts, fmt.Sprintf("junk%d=%s", i, strings.Repeat("x", size)))
		}
		return strings.Join(parts, "; ")
	}
	add("cookies", "100 other cookies and a valid one", 200, reached(h1, http.MethodGet, "/work/1", hdr("Cookie", junk(100, 20)+"; "+aliceCookie, "Accept", "application/json")))
	// Cookie shadowing (issue 11): a name sent twice is no session, never
	// the first or the last copy.
	dup := func(name string, want int, cookies ...string) {
		add("cookies", name, want, func(t *testing.T) (int, string) {
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
	add("cookies", "a duplicate page for a navigation, not a login loop", 401, func(t *testing.T) (int, string) {
		h := hdr("Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document", "Accept", "text/html")
		h["Cookie"] = []string{"__Host-gatehouse=" + bobSession + "; " + aliceCookie}
		resp, body := h1.send(t, http.MethodGet, main+"/work/1", h, nil)
		if resp.Header.Get("Location") != "" || !strings.Contains(body, "cookie sent twice") {
			return resp.StatusCode, "Location " + resp.Header.Get("Location")
		}
		return resp.StatusCode, ""
	})
	add("cookies", "an 8 KB session cookie", 401, reached(h1, http.MethodGet, "/work/1", hdr("Cookie", "__Host-gatehouse="+strings.Repeat("A", 8192), "Accept", "application/json")))
	add("cookies", "bad base64", 401, reached(h1, http.MethodGet, "/work/1", hdr("Cookie", "__Host-gatehouse=%%%***", "Accept", "application/json")))
	add("cookies", "a value with quotes", 401, reached(h1, http.MethodGet, "/work/1", hdr("Cookie", `__Host-gatehouse="MTIz"`, "Accept", "application/json")))
	add("cookies", "another app's cookie", 401, func(t *testing.T) (int, string) {
		b := newBrowser(t, gh)
		b.navigate(evilSite + "/")
		c := b.cookie(evilSite, "__Host-evil")
		if c == nil {
			return 0, "no evil-site cookie"
		}
		resp, _ := h1.send(t, http.MethodGet, main+"/work/1", hdr("Cookie", "__Host-gatehouse="+c.Value, "Accept", "application/json"), nil)
		return resp.StatusCode, ""
	})
	add("cookies", "8 KB of other cookies", 401, reached(h1, http.MethodGet, "/work/1", hdr("Cookie", junk(8, 1000), "Accept", "application/json")))
	add("cookies", "a header block over the server's limit", 431, reached(h1, http.MethodGet, "/work/1", hdr("Cookie", junk(64, 1000), "Accept", "application/json")))
	add("cookies", "the login cookie as a session", 401, reached(h1, http.MethodGet, "/work/1", hdr("Cookie", "__Host-gatehouse="+alice.cookie(main+"/.gatehouse/", "__Secure-gatehouse_idt").Value, "Accept", "application/json")))

	// --- Callback abuse (the certified IdP) ---------------------------------
	for name, q := range map[string]string{
		"no state": "code=abc", "empty state": "code=abc&state=", "malformed state": "code=abc&state=..%2F..%2F",
		"unknown state": "code=abc&state=AAAAAAAAAAAAAAAAAAAAAAAAAA", "two states": "code=abc&state=AAAAAAAAAAAAAAAAAAAAAAAAAA&state=BBBBBBBBBBBBBBBBBBBBBBBBBB",
	} {
		add("callback", name, 400, status(h1, http.MethodGet, "/.gatehouse/callback?"+q, hdr()))
	}
	add("callback", "POST", 405, status(h1, http.MethodPost, "/.gatehouse/callback", hdr()))
	add("callback", "code replayed in the attacker's own login", 401, func(t *testing.T) (int, string) {
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
	add("callback", "IdP error response", 401, func(t *testing.T) (int, string) {
		b := newBrowser(t, gh)
		cb := mustParse(loginUntilCallbackURL(t, b, main+"/e", "alice"))
		return b.navigate(main + "/.gatehouse/callback?error=access_denied&error_description=%3Cscript%3E&state=" + cb.Query().Get("state")).StatusCode, ""
	})
	add("callback", "a state from another browser", 400, func(t *testing.T) (int, string) {
		victim := newBrowser(t, gh)
		cb := loginUntilCallbackURL(t, victim, main+"/v2", "alice")
		return newBrowser(t, gh).navigate(cb).StatusCode, ""
	})
	add("callback", "a replayed callback", 400, func(t *testing.T) (int, string) {
		b := newBrowser(t, gh)
		cb := loginUntilCallbackURL(t, b, main+"/r", "alice")
		b.navigate(cb)
		return b.navigate(cb).StatusCode, ""
	})

	// --- Forged ID tokens (an IdP that lies) --------------------------------
	for _, mode := range []string{"wrong_nonce", "no_nonce", "other_client", "two_audiences", "other_issuer", "expired", "future_iat",
		"no_sub", "unknown_key", "alg_none", "hs256_public_key", "error",
		// issue 11: auth_time is required (max_age is always sent), and no
		// time may be more than 5 s ahead.
		"no_auth_time", "future_auth_time", "future_iat_small", "random_kid"} {
		mode := mode
		add("forged tokens", mode, 401, func(t *testing.T) (int, string) {
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
	add("forged tokens", "20 tokens with made-up key ids fetch the key set at most once", 401, func(t *testing.T) (int, string) {
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
	add("forged tokens", "control: a good token", 200, func(t *testing.T) (int, string) {
		evil.setMode("ok")
		return newBrowser(t, gh).navigate(evilSite + "/x").StatusCode, ""
	})

	// --- Step-up downgrade ---------------------------------------------------
	for mode, want := range map[string]int{"ok": 403, "stale_mfa": 403, "other_user": 403, "mfa": 200, "future_mfa": 403} {
		mode, want := mode, want
		add("step-up downgrade", mode, want, func(t *testing.T) (int, string) {
			evil.setMode("ok")
			b := newBrowser(t, gh)
			mustStatus(t, b.navigate(evilSite+"/"), http.StatusOK)
			evil.setMode(mode)
			defer evil.setMode("ok")
			return b.navigate(evilSite + "/admin/").StatusCode, ""
		})
	}

	// --- CSRF and forged requests -------------------------------------------
	post := func(path, cookie string, v url.Values, kv ...string) func(*testing.T) (int, string) {
		return func(t *testing.T) (int, string) {
			h := as(cookie, append([]string{"Content-Type", "application/x-www-form-urlencoded"}, kv...)...)
			resp, _ := h1.send(t, http.MethodPost, main+path, h, strings.NewReader(v.Encode()))
			return resp.StatusCode, ""
		}
	}
	offer := bobForm.Get("offer")
	csrf := bobForm.Get("csrf")
	request := func(change func(v url.Values)) url.Values {
		v := url.Values{"csrf": {csrf}, "offer": {offer}, "reason": {"x"}, "duration": {"1h"}}
		if change != nil {
			change(v)
		}
		return v
	}
	add("csrf", "request without a token", 403, post("/.gatehouse/request", bobCookie, request(func(v url.Values) { v.Del("csrf") })))
	add("csrf", "request with another session's token", 403, post("/.gatehouse/request", bobCookie, request(func(v url.Values) { v.Set("csrf", carolJS.CSRF) })))
	add("csrf", "request from another site", 403, post("/.gatehouse/request", bobCookie, request(nil), "Sec-Fetch-Site", "cross-site"))
	add("csrf", "request with a foreign Origin", 403, post("/.gatehouse/request", bobCookie, request(nil), "Origin", "https://evil.example"))
	add("csrf", "request with Origin null, cross-site", 403, post("/.gatehouse/request", bobCookie, request(nil), "Origin", "null", "Sec-Fetch-Site", "cross-site"))
	add("csrf", "my access without a token", 403, post("/.gatehouse/access", bobCookie, url.Values{"grant": {"x"}, "action": {"end"}}))
	add("csrf", "approvals without a token", 403, post("/.gatehouse/approvals", aliceCookie, url.Values{"request": {"x"}, "action": {"approve"}}))
	add("csrf", "request without a session", 401, post("/.gatehouse/request", "", request(nil)))
	add("csrf", "GET on the request endpoint", 405, status(h1, http.MethodGet, "/.gatehouse/request", as(bobCookie)))
	add("forged requests", "an offer never made (tampered)", 403, post("/.gatehouse/request", bobCookie, request(func(v url.Values) { v.Set("offer", offer[:30]+flip(offer[30])+offer[31:]) })))
	add("forged requests", "another user's offer", 403, post("/.gatehouse/request", bobCookie, request(func(v url.Values) { v.Set("offer", carolOffer) })))
	add("forged requests", "no offer", 403, post("/.gatehouse/request", bobCookie, request(func(v url.Values) { v.Del("offer") })))
	for d, want := range map[string]int{"9h": 400, "8h0m1s": 400, "-1h": 400, "0s": 400, "9999999999h": 400, "1e9h": 400, "NaN": 400,
		"": 400, "1h;rm": 400, "0.5s": 400} {
		d := d
		add("forged requests", "duration "+d, want, post("/.gatehouse/request", bobCookie, request(func(v url.Values) { v.Set("duration", d) })))
	}
	add("forged requests", "a 20 KB form", 403, post("/.gatehouse/request", bobCookie, request(func(v url.Values) { v.Set("reason", strings.Repeat("x", 20000)) })))

	// Run the table.
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
