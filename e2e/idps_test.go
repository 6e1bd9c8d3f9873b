package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// partnersEnv runs caddyfile-examples/partners.Caddyfile as is, with two
// certified IdPs: the staff's (corp profile) and a partner company's
// (partner profile: bob, pat, and mallory, who claims alice@example.com).
type partnersEnv struct {
	corp, partner *idp
	gh            *gatehouse
	site          string
}

func startPartners(t *testing.T) *partnersEnv {
	site := fmt.Sprintf("https://localhost:%d", freePort(t))
	client := func(id string) idpClient {
		return idpClient{ClientID: id, ClientSecret: id + "-secret", RedirectURIs: []string{site + "/.gatehouse/callback"},
			PostLogoutRedirectURIs: []string{site + "/.gatehouse/logout"}}
	}
	// pat is a login at both IdPs: two people.
	corp := startIdPWith(t, []string{`IDP_EXTRA_USERS={"pat":{"name":"Pat Staff","email":"pat@example.com","email_verified":true,"groups":["staff"]}}`}, client("corp"))
	partner := startIdPWith(t, []string{"IDP_PROFILE=partner"}, client("partner"))
	up := startUpstream(t)
	env := append(exampleEnv(t, site, corp.Issuer, "corp", up),
		"PARTNER_ISSUER="+partner.Issuer, "PARTNER_CLIENT_ID=partner", "PARTNER_CLIENT_SECRET=partner-secret")
	gh := startGatehouse(t, readExample(t, "partners.Caddyfile"), env, site)
	return &partnersEnv{corp: corp, partner: partner, gh: gh, site: site}
}

// TestExamplePartners runs partners.Caddyfile as staff, partners and a
// hostile partner user meet it. The subtests share the gateway and the
// IdPs, each with its own browsers.
func TestExamplePartners(t *testing.T) {
	env := startPartners(t)
	for _, c := range []struct {
		name string
		run  func(t *testing.T, env *partnersEnv)
	}{
		{"the sign-in page offers both IdPs", partnersSignInPage},
		{"each IdP signs in its own people", partnersSignIn},
		{"the same login at both IdPs is two people", partnersSameLogin},
		{"a partner user claiming a staff address is refused", partnersHostileEmail},
		{"an answer from the other IdP is refused", partnersMixUp},
		{"hostile choices show the sign-in page", partnersHostileChoices},
		{"logout ends the session at its IdP", partnersLogout},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, env) })
	}
}

// partnersSignInPage: a browser without a session lands on the sign-in
// page: a button per IdP and the email field, no script, no issuer; its
// CSP lets its forms go on to either IdP; readiness names both.
func partnersSignInPage(t *testing.T, env *partnersEnv) {
	b := newBrowser(t, env.gh)
	p := b.navigate(env.site + "/reports?q=1")
	mustStatus(t, p, http.StatusOK)
	if p.Request.URL.String() != env.site+"/.gatehouse/login?rd=%2Freports%3Fq%3D1" {
		t.Fatalf("landed on %s", p.Request.URL)
	}
	for _, s := range []string{`<button type="submit" name="idp" value="corp">Example staff</button>`,
		`<button type="submit" name="idp" value="partner">Partner Ltd</button>`, `name="login_hint"`, `name="rd" value="/reports?q=1"`} {
		if !strings.Contains(p.Body, s) {
			t.Errorf("sign-in page lacks %s:\n%s", s, p.Body)
		}
	}
	for _, s := range []string{"<script", env.corp.Issuer, env.partner.Issuer} {
		if strings.Contains(p.Body, s) {
			t.Errorf("sign-in page has %s", s)
		}
	}
	csp := p.Header.Get("Content-Security-Policy")
	for _, iss := range []string{env.corp.Issuer, env.partner.Issuer} {
		if !strings.Contains(csp, " "+iss) {
			t.Errorf("CSP form-action lacks %s: %s", iss, csp)
		}
	}
	if findAudit(auditLine("path", "/.gatehouse/login", "result", "internal", "reason", "choose_idp"), env.gh) == nil {
		t.Error("no audit line for the sign-in page")
	}
	var ready struct{ IdP map[string]string }
	b.fetch(http.MethodGet, env.site+"/.gatehouse/readyz").json(t, &ready)
	if ready.IdP["corp"] != "up" || ready.IdP["partner"] != "up" {
		t.Errorf("readiness: %+v", ready)
	}
}

// partnersSignIn: a partner's button leads to the partner's IdP, an
// email of the staff's domain to the staff's (with the email as
// login_hint); each user reaches the app with their own IdP's issuer.
func partnersSignIn(t *testing.T, env *partnersEnv) {
	b := newBrowser(t, env.gh)
	p := b.navigate(env.site + "/.gatehouse/login?idp=partner&rd=%2Freports")
	if !isLoginForm(p) || !strings.HasPrefix(p.Request.URL.String(), env.partner.Issuer) {
		t.Fatalf("idp=partner did not reach the partner's login form:\n%s", fmtHops(b.hops))
	}
	landed := b.submitLogin(p, "bob")
	mustStatus(t, landed, http.StatusOK)
	e := landed.echo(t)
	if landed.Request.URL.Path != "/reports" || e.Headers["X-Remote-User"][0] != "bob@partner.example" ||
		e.Headers["X-Remote-Issuer"][0] != env.partner.Issuer || e.Headers["X-Remote-Sub"][0] != "bob" {
		t.Errorf("partner bob at %s: %v", landed.Request.URL, e.Headers)
	}
	if findAudit(auditLine("path", "/.gatehouse/callback", "result", "login_ok", "user", "bob", "iss", env.partner.Issuer), env.gh) == nil ||
		findAudit(auditLine("path", "/reports", "result", "allow", "user", "bob", "iss", env.partner.Issuer), env.gh) == nil {
		t.Error("no audit lines naming the partner's issuer")
	}

	staff := newBrowser(t, env.gh)
	p = staff.navigate(env.site + "/.gatehouse/login?login_hint=alice%40example.com&rd=%2Fdocs")
	if !isLoginForm(p) || !strings.HasPrefix(p.Request.URL.String(), env.corp.Issuer) || !strings.Contains(p.Body, "Signing in as alice@example.com") {
		t.Fatalf("an example.com email did not reach the staff's IdP with its login_hint:\n%s\n%s", fmtHops(staff.hops), p.Body)
	}
	e = staff.submitLogin(p, "alice").echo(t)
	if e.Path != "/docs" || e.Headers["X-Remote-Issuer"][0] != env.corp.Issuer || e.Headers["X-Remote-Groups"][0] != "staff,payroll-users" {
		t.Errorf("staff alice: %s %v", e.Path, e.Headers)
	}
}

// partnersSameLogin: pat at the staff's IdP and pat at the partner's are
// two users: two subjects of two issuers, told apart everywhere.
func partnersSameLogin(t *testing.T, env *partnersEnv) {
	staff, partner := newBrowser(t, env.gh), newBrowser(t, env.gh)
	s := staff.submitLogin(staff.navigate(env.site+"/.gatehouse/login?idp=corp&rd=%2Fp"), "pat").echo(t)
	p := partner.submitLogin(partner.navigate(env.site+"/.gatehouse/login?idp=partner&rd=%2Fp"), "pat").echo(t)
	if s.Headers["X-Remote-Sub"][0] != "pat" || p.Headers["X-Remote-Sub"][0] != "pat" ||
		s.Headers["X-Remote-Issuer"][0] != env.corp.Issuer || p.Headers["X-Remote-Issuer"][0] != env.partner.Issuer ||
		s.Headers["X-Remote-User"][0] != "pat@example.com" || p.Headers["X-Remote-User"][0] != "pat@partner.example" {
		t.Errorf("the two pats: %v / %v", s.Headers, p.Headers)
	}
	// The partner's pat asserted no groups: the staff's groups are not
	// hers.
	if g := p.Headers["X-Remote-Groups"]; len(g) != 0 {
		t.Errorf("the partner's pat has groups %v", g)
	}
	// Each one's cookie opens as its own IdP's session only.
	sc, pc := staff.cookie(env.site, "__Host-gatehouse"), partner.cookie(env.site, "__Host-gatehouse")
	if sc == nil || pc == nil || sc.Value == pc.Value {
		t.Fatal("no session cookies")
	}
}

// partnersHostileEmail: the partner's IdP vouches for mallory with the
// verified address alice@example.com: refused, audited, no session; she
// cannot pass for the staff's alice.
func partnersHostileEmail(t *testing.T, env *partnersEnv) {
	b := newBrowser(t, env.gh)
	p := b.submitLogin(b.navigate(env.site+"/.gatehouse/login?idp=partner&rd=%2Fadmin"), "mallory")
	mustStatus(t, p, http.StatusForbidden)
	if !strings.Contains(p.Body, "Sign-in failed") || strings.Contains(p.Body, "alice@example.com") {
		t.Errorf("refusal page:\n%s", p.Body)
	}
	if b.cookie(env.site, "__Host-gatehouse") != nil {
		t.Error("mallory holds a session cookie")
	}
	if findAudit(auditLine("path", "/.gatehouse/callback", "result", "login_failed", "reason", "domain_not_allowed",
		"user", "mallory", "iss", env.partner.Issuer), env.gh) == nil {
		t.Error("no audit line says domain_not_allowed")
	}
	// Typing alice's address sends nobody to the partner.
	p = b.navigate(env.site + "/.gatehouse/login?idp=partner&login_hint=alice%40example.com")
	mustStatus(t, p, http.StatusBadRequest)
	if !strings.Contains(p.Body, `name="idp" value="partner"`) {
		t.Errorf("a partner sign-in with a staff address: not the sign-in page:\n%s", p.Body)
	}
}

// partnersMixUp: a sign-in sent to the staff's IdP whose answer comes
// from the partner's (the partner's IdP, or whoever controls it, runs
// the same authorization request with its own client) is refused.
func partnersMixUp(t *testing.T, env *partnersEnv) {
	b := newBrowser(t, env.gh)
	resp, err := b.noRedirects().Get(env.site + "/.gatehouse/login?idp=corp&rd=%2Fmixup")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	auth, err := resp.Location()
	if err != nil || !strings.HasPrefix(auth.String(), env.corp.Issuer) {
		t.Fatalf("login at corp: %d %v", resp.StatusCode, auth)
	}
	q := auth.Query()
	q.Set("client_id", "partner")
	form := b.navigate(env.partner.Issuer + "/auth?" + q.Encode())
	p := b.submitLogin(form, "bob")
	mustStatus(t, p, http.StatusBadRequest)
	if p.Request.URL.Path != "/.gatehouse/callback" || !strings.Contains(p.Request.URL.RawQuery, "iss="+url.QueryEscape(env.partner.Issuer)) {
		t.Errorf("the partner's answer came back as %s", p.Request.URL)
	}
	if findAudit(auditLine("path", "/.gatehouse/callback", "result", "login_failed", "reason", "issuer_mismatch"), env.gh) == nil {
		t.Error("no audit line says issuer_mismatch")
	}
	if b.cookie(env.site, "__Host-gatehouse") != nil {
		t.Error("a mixed-up answer made a session")
	}
}

// partnersHostileChoices: unknown, repeated, unicode and oversized IdP
// names and emails get the sign-in page again, never an error naming the
// configuration.
func partnersHostileChoices(t *testing.T, env *partnersEnv) {
	b := newBrowser(t, env.gh)
	for _, c := range []struct{ query, says string }{
		{"idp=nope", "not available here"},
		{"idp=corp&idp=partner", "not available here"},
		{"idp=c%C3%B6rp", "not available here"},
		{"idp=" + strings.Repeat("x", 4000), "not available here"},
		{"login_hint=eve%40unknown.example", "addresses at unknown.example"},
		{"login_hint=eve%40example.com%40partner.example", "not an email address"},
		{"login_hint=%C3%A5sa%40example.com", "not an email address"},
		{"idp=corp&login_hint=bob%40partner.example", "cannot be used with the way of signing in you chose"},
	} {
		p := b.navigate(env.site + "/.gatehouse/login?" + c.query)
		if p.StatusCode != http.StatusBadRequest || !strings.Contains(p.Body, c.says) || !strings.Contains(p.Body, `name="idp" value="corp"`) {
			t.Errorf("%.60s: %d\n%s", c.query, p.StatusCode, p.Body)
		}
		if strings.Contains(p.Body, env.corp.Issuer) || strings.Contains(p.Body, env.partner.Issuer) {
			t.Errorf("%.60s: the page names an issuer", c.query)
		}
	}
	// An API client gets the choices as JSON.
	var choices struct {
		Reason string
		IdPs   []struct {
			Name, Label string
			LoginURL    string `json:"login_url"`
		} `json:"idps"`
	}
	b.fetch(http.MethodGet, env.site+"/.gatehouse/login?rd=%2Fapi").json(t, &choices)
	if choices.Reason != "choose_idp" || len(choices.IdPs) != 2 || choices.IdPs[1].LoginURL != "/.gatehouse/login?idp=partner&rd=%2Fapi" {
		t.Errorf("JSON choices: %+v", choices)
	}
}

// partnersLogout: signing out sends the browser to the partner's IdP to
// end its session there, not to the staff's.
func partnersLogout(t *testing.T, env *partnersEnv) {
	b := newBrowser(t, env.gh)
	mustStatus(t, b.submitLogin(b.navigate(env.site+"/.gatehouse/login?idp=partner&rd=%2F"), "pat"), http.StatusOK)
	p := b.navigate(env.site + "/.gatehouse/logout")
	if !strings.HasPrefix(p.Request.URL.String(), env.partner.Issuer) || !strings.Contains(p.Body, "Sign out") {
		t.Errorf("logout went to %s:\n%s", p.Request.URL, fmtHops(b.hops))
	}
}

// TestBrowserPartnersJourney walks the sign-in page in real headless
// Chromium: a partner picks their organisation's button, staff type
// their email, someone of an unknown domain is told so.
func TestBrowserPartnersJourney(t *testing.T) {
	env := startPartners(t)
	site := env.site

	partner := newChrome(t, "partner")
	partner.do("opening the app", chromedp.Navigate(site+"/work/1"))
	partner.waitFor(site+"/.gatehouse/login", "Choose how to sign in")
	partner.do("choosing Partner Ltd", chromedp.Click(chromedp.CSS("button[value=partner]")))
	partner.waitFor(env.partner.Issuer, "Sign in to Partner Ltd")
	partner.signIn("bob", "")
	partner.waitFor(site+"/work/1", "bob@partner.example")

	staff := newChrome(t, "staff")
	staff.do("opening the app", chromedp.Navigate(site+"/docs"))
	staff.waitFor(site+"/.gatehouse/login", "Choose how to sign in")
	staff.do("typing an email",
		chromedp.SendKeys(chromedp.CSS("#login_hint"), "alice@example.com"),
		chromedp.Focus(chromedp.CSS("#login_hint")),
		chromedp.KeyEvent("\r"),
	)
	staff.waitFor(env.corp.Issuer, "Signing in as alice@example.com")
	staff.signIn("alice", "")
	staff.waitFor(site+"/docs", "alice@example.com")

	stranger := newChrome(t, "stranger")
	stranger.do("opening the app", chromedp.Navigate(site+"/"))
	stranger.waitFor(site+"/.gatehouse/login", "Choose how to sign in")
	stranger.do("typing an email of no one's domain",
		chromedp.SendKeys(chromedp.CSS("#login_hint"), "eve@unknown.example"),
		chromedp.Click(chromedp.CSS("form:has(#login_hint) button[type=submit]")),
	)
	stranger.waitFor(site+"/.gatehouse/login", "No sign-in here is set up for addresses at unknown.example")
	if v, err := chromedp.Run(stranger.ctx, chromedp.Value(chromedp.CSS("#login_hint"))); err != nil || v != "eve@unknown.example" {
		stranger.fail("the email typed is not shown again: %q %v", v, err)
	}
}
