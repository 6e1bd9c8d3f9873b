package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
)

// exampleEnv is the environment every example reads.
func exampleEnv(t *testing.T, site, issuer, client string, up *upstream) []string {
	return []string{"GATEHOUSE_SITE=" + site, "GATEHOUSE_ISSUER=" + issuer, "GATEHOUSE_CLIENT_ID=" + client,
		"GATEHOUSE_CLIENT_SECRET=" + client + "-secret", "GATEHOUSE_COOKIE_SECRET=" + randomSecret(t),
		"GATEHOUSE_UPSTREAM=" + up.Listener.Addr().String()}
}

func readExample(t *testing.T, name string) string {
	b, err := os.ReadFile("../caddyfile-examples/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestExampleSensitivePaths runs sensitive-paths.Caddyfile as is.
func TestExampleSensitivePaths(t *testing.T) {
	site := fmt.Sprintf("https://localhost:%d", freePort(t))
	p := startIdP(t, idpClient{ClientID: "hr", ClientSecret: "hr-secret", RedirectURIs: []string{site + "/.gatehouse/callback"},
		PostLogoutRedirectURIs: []string{site + "/.gatehouse/logout"}})
	up := startUpstream(t)
	gh := startGatehouse(t, readExample(t, "sensitive-paths.Caddyfile"), exampleEnv(t, site, p.Issuer, "hr", up), site)
	b := newBrowser(t, gh)
	if e := b.login(site+"/", "alice").echo(t); e.Headers["X-Remote-Acr"][0] != "urn:gatehouse:loa:pwd" {
		t.Errorf("X-Remote-ACR before step-up: %v", e.Headers["X-Remote-Acr"])
	}
	if p := b.fetch(http.MethodGet, site+"/payslips/2026-11"); p.StatusCode != http.StatusUnauthorized {
		t.Errorf("payslips without MFA: %d", p.StatusCode)
	}
	form := b.navigate(site + "/export/all.csv")
	done := b.submitLoginOTP(form, "alice", "111111")
	if done.StatusCode != http.StatusOK || done.Request.URL.Path != "/export/all.csv" || done.echo(t).Headers["X-Remote-Acr"][0] != "urn:gatehouse:loa:mfa" {
		t.Fatalf("after the step-up: %d %s", done.StatusCode, done.Request.URL)
	}
	// The MFA of the step-up also satisfies the payslips rule (no max_age).
	if p := b.fetch(http.MethodGet, site+"/payslips/2026-11"); p.StatusCode != http.StatusOK {
		t.Errorf("payslips after MFA: %d", p.StatusCode)
	}
}

// TestExampleEIDStepOut runs eid-step-out.Caddyfile as is.
func TestExampleEIDStepOut(t *testing.T) {
	site := fmt.Sprintf("https://localhost:%d", freePort(t))
	corp := startIdP(t, idpClient{ClientID: "care", ClientSecret: "care-secret", RedirectURIs: []string{site + "/.gatehouse/callback"},
		PostLogoutRedirectURIs: []string{site + "/.gatehouse/logout"}})
	eid := startIdPWith(t, []string{"IDP_PROFILE=eid"}, idpClient{ClientID: "care-eid", ClientSecret: "care-eid-secret",
		RedirectURIs: []string{site + "/.gatehouse/callback"}})
	up := startUpstream(t)
	env := append(exampleEnv(t, site, corp.Issuer, "care", up), "EID_ISSUER="+eid.Issuer, "EID_CLIENT_ID=care-eid", "EID_CLIENT_SECRET=care-eid-secret")
	gh := startGatehouse(t, readExample(t, "eid-step-out.Caddyfile"), env, site)
	b := newBrowser(t, gh)
	mustStatus(t, b.login(site+"/", "alice"), http.StatusOK)
	p := b.navigate(site + "/patients/17")
	if !strings.HasPrefix(p.Request.URL.String(), eid.Issuer) {
		t.Fatalf("patients did not step out to the eID:\n%s", fmtHops(b.hops))
	}
	mustStatus(t, b.submitLogin(p, "alice"), http.StatusOK)
	// Prescriptions need the eID (held) and the company's MFA too.
	p = b.navigate(site + "/prescriptions/3")
	if !strings.HasPrefix(p.Request.URL.String(), corp.Issuer) || !strings.Contains(p.Body, `name="otp"`) {
		t.Fatalf("prescriptions did not ask for the company MFA:\n%s", fmtHops(b.hops))
	}
	if done := b.submitLoginOTP(p, "alice", "111111"); done.StatusCode != http.StatusOK || done.Request.URL.Path != "/prescriptions/3" {
		t.Fatalf("after both step-ups: %d %s", done.StatusCode, done.Request.URL)
	}
}

// TestExampleSharedLogin runs shared-login.Caddyfile as is: two apps, one
// password.
func TestExampleSharedLogin(t *testing.T) {
	wiki := fmt.Sprintf("https://localhost:%d", freePort(t))
	crm := fmt.Sprintf("https://localhost:%d", freePort(t))
	p := startIdP(t, idpClient{ClientID: "corp", ClientSecret: "corp-secret",
		RedirectURIs:           []string{wiki + "/.gatehouse/callback", crm + "/.gatehouse/callback"},
		PostLogoutRedirectURIs: []string{wiki + "/.gatehouse/logout", crm + "/.gatehouse/logout"}})
	wikiUp, crmUp := startUpstream(t), startUpstream(t)
	env := append(exampleEnv(t, "", p.Issuer, "corp", wikiUp), "WIKI_SITE="+wiki, "CRM_SITE="+crm,
		"WIKI_UPSTREAM="+wikiUp.Listener.Addr().String(), "CRM_UPSTREAM="+crmUp.Listener.Addr().String())
	gh := startGatehouse(t, readExample(t, "shared-login.Caddyfile"), env, wiki, crm)
	b := newBrowser(t, gh)
	mustStatus(t, b.login(wiki+"/page", "alice"), http.StatusOK)
	// The second app: through the IdP's single sign-on, no password.
	p2 := b.navigate(crm + "/contacts")
	if isLoginForm(p2) || p2.StatusCode != http.StatusOK || p2.Request.URL.String() != crm+"/contacts" {
		t.Fatalf("the second app asked for a password again or failed: %d %s\n%s", p2.StatusCode, p2.Request.URL, fmtHops(b.hops))
	}
	if e := p2.echo(t); e.Headers["X-Remote-User"][0] != "alice@example.com" {
		t.Errorf("crm identity: %v", e.Headers)
	}
	// Each app keeps its own cookie: the first still works.
	if p := b.fetch(http.MethodGet, wiki+"/page"); p.StatusCode != http.StatusOK {
		t.Errorf("the first app after signing in to the second: %d", p.StatusCode)
	}
	if b.cookie(wiki, "__Host-gh_wiki") == nil || b.cookie(crm, "__Host-gh_crm") == nil {
		t.Error("the apps do not have a cookie each")
	}
	// bob is not staff: refused by both.
	bob := newBrowser(t, gh)
	if p := bob.login(wiki+"/", "bob"); p.StatusCode != http.StatusForbidden {
		t.Errorf("bob on the wiki: %d", p.StatusCode)
	}
}
