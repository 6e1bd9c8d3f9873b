package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const stepUpPolicy = `package gatehouse

decision := {"allow": true, "headers": headers} if input.request.path_lower != "/policy-mfa"

# The policy can ask for a step-up too.
decision := {"allow": true, "headers": headers, "step_up": {"acr": ["urn:gatehouse:loa:mfa"]}} if input.request.path_lower == "/policy-mfa"

headers["X-Verified-Name"] := input.user.verifications.eid.given_name
`

func TestStepUp(t *testing.T) {
	site := fmt.Sprintf("https://localhost:%d", freePort(t))
	weakSite := fmt.Sprintf("https://localhost:%d", freePort(t))
	client := func(id, base string) idpClient {
		return idpClient{ClientID: id, ClientSecret: id + "-secret",
			RedirectURIs: []string{base + "/.gatehouse/callback"}, PostLogoutRedirectURIs: []string{base + "/.gatehouse/logout"}}
	}
	corp := startIdP(t, client("su", site))
	eid := startIdPWith(t, []string{"IDP_PROFILE=eid"}, client("su-eid", site))
	weak := startIdPWith(t, []string{"IDP_ACR_HINT_ONLY=1"}, client("su-weak", weakSite))
	up := startUpstream(t)
	policyDir := t.TempDir()
	_ = os.WriteFile(filepath.Join(policyDir, "p.rego"), []byte(stepUpPolicy), 0o644)
	secret := randomSecret(t)
	gh := startGatehouse(t, fmt.Sprintf(`%[1]s {
	gatehouse {
		app su
		issuer %[2]s
		client_id su
		client_secret su-secret
		scopes openid email profile groups
		cookie_secret %[6]s
		identity_header X-Remote-User email
		step_up /admin /admin/* {
			acr urn:gatehouse:loa:mfa
			amr otp
			max_age 2s
		}
		step_up /payouts /payouts/* {
			provider eid
			acr urn:eid:loa:high
		}
		provider eid {
			issuer %[3]s
			client_id su-eid
			client_secret su-eid-secret
			scopes openid profile email
			link_claim email
			claims given_name birthdate
		}
		policy %[4]s
		policy_headers X-Verified-Name
		decision_log full
	}
	reverse_proxy %[5]s
}

%[7]s {
	gatehouse {
		app su-weak
		issuer %[8]s
		client_id su-weak
		client_secret su-weak-secret
		cookie_secret %[6]s
		step_up /admin /admin/* {
			acr urn:gatehouse:loa:mfa
		}
	}
	reverse_proxy %[5]s
}
`, site, corp.Issuer, eid.Issuer, policyDir, up.Listener.Addr(), secret, weakSite, weak.Issuer), nil, site, weakSite)

	t.Run("step up with the second factor, until max_age passes", func(t *testing.T) {
		t.Parallel()
		b := newBrowser(t, gh)
		mustStatus(t, b.login(site+"/", "alice"), http.StatusOK)

		// A sensitive page sends the browser back to the IdP, asking for MFA.
		p := b.navigate(site + "/admin/")
		if !isLoginForm(p) || !strings.Contains(p.Body, `name="otp"`) {
			t.Fatalf("no step-up form:\n%s\n%s", fmtHops(b.hops), p.Body)
		}
		loc, _ := url.Parse(b.hops[0].Header.Get("Location"))
		q := loc.Query()
		if q.Get("acr_values") != "urn:gatehouse:loa:mfa" || q.Get("prompt") != "login" || q.Get("max_age") != "2" {
			t.Errorf("step-up request: %s", loc)
		}
		// A wrong code leaves the session as it was.
		wrong := b.submitLoginOTP(p, "alice", "000000")
		if !strings.Contains(wrong.Body, "Wrong one-time code") {
			t.Fatalf("a wrong code was accepted:\n%s", wrong.Body)
		}
		if p := b.fetch(http.MethodGet, site+"/admin/"); p.StatusCode != http.StatusUnauthorized {
			t.Fatalf("after a wrong code: %d", p.StatusCode)
		}
		// The right code upgrades the session in place.
		p = b.navigate(site + "/admin/")
		done := b.submitLoginOTP(p, "alice", "111111")
		mustStatus(t, done, http.StatusOK)
		if done.Request.URL.String() != site+"/admin/" || done.echo(t).Headers["X-Remote-User"][0] != "alice@example.com" {
			t.Fatalf("after step-up: %s", done.Request.URL)
		}
		stepped := time.Now()
		if findAudit(auditLine("msg", "step-up succeeded", "user", "alice", "reason", ""), gh) == nil {
			t.Error("no audit line for the successful step-up")
		}
		// Path variants are sensitive too, and now pass without a prompt.
		for _, path := range []string{"/admin/x", "/Admin/x", "//admin/x", "/x/../admin/x", "/%61dmin/x"} {
			p := b.fetch(http.MethodGet, site+path)
			if p.StatusCode != http.StatusOK || len(b.hops) != 1 {
				t.Errorf("%s after step-up: %d, %d hops", path, p.StatusCode, len(b.hops))
			}
		}
		// max_age (2s, plus 5s of allowed clock skew) passes: asked again,
		// while the base session lives on.
		time.Sleep(time.Until(stepped.Add(7500 * time.Millisecond)))
		p = b.fetch(http.MethodGet, site+"/admin/x")
		var body struct{ Error, Reason string }
		p.json(t, &body)
		if p.StatusCode != http.StatusUnauthorized || body.Reason != "max_age" {
			t.Errorf("after max_age: %d %+v", p.StatusCode, body)
		}
		if p := b.fetch(http.MethodGet, site+"/"); p.StatusCode != http.StatusOK {
			t.Errorf("the base session did not live on: %d", p.StatusCode)
		}
		if p := b.navigate(site + "/admin/"); !isLoginForm(p) {
			t.Errorf("after max_age, no new prompt:\n%s", fmtHops(b.hops))
		}
	})

	t.Run("sensitive paths without the step-up", func(t *testing.T) {
		// Not parallel: it counts the upstream's hits, which the parallel
		// subtests (paused until this one ends) would add to.
		b := newBrowser(t, gh)
		mustStatus(t, b.login(site+"/", "carol"), http.StatusOK)
		hits := up.hits.Load()
		for _, path := range []string{"/admin", "/admin/", "/Admin/x", "//admin/x", "/x/../admin/x", "/%61dmin/x", "/ADMIN/%2e/x"} {
			p := b.fetch(http.MethodGet, site+path)
			if p.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s: %d", path, p.StatusCode)
			}
		}
		for _, path := range []string{"/admin;x", "/admin%2fx", "/admin\\x"} {
			if p := b.fetch(http.MethodGet, site+path); p.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: %d, want 400", path, p.StatusCode)
			}
		}
		// A POST gets 401 JSON naming what is missing and where to get it.
		p := b.fetch(http.MethodPost, site+"/admin/users")
		var body struct {
			Error       string
			Reason      string
			StepUpURL   string `json:"step_up_url"`
			Requirement struct {
				ACR    []string
				AMR    []string
				MaxAge string `json:"max_age"`
			}
		}
		p.json(t, &body)
		if p.StatusCode != http.StatusUnauthorized || body.Error != "step_up_required" || body.Reason != "acr" ||
			body.StepUpURL != "/.gatehouse/stepup?rd=%2Fadmin%2Fusers" || body.Requirement.ACR[0] != "urn:gatehouse:loa:mfa" ||
			body.Requirement.AMR[0] != "otp" || body.Requirement.MaxAge != "2s" {
			t.Errorf("POST: %d %+v", p.StatusCode, body)
		}
		if up.hits.Load() != hits {
			t.Error("a sensitive request without step-up reached the upstream")
		}
		// The step_up_url starts the step-up.
		form := b.navigate(site + body.StepUpURL)
		if !isLoginForm(form) || !strings.Contains(form.Body, `name="otp"`) {
			t.Fatalf("step_up_url did not start a step-up:\n%s", fmtHops(b.hops))
		}
		landed := b.submitLoginOTP(form, "carol", "333333")
		if landed.Request.URL.String() != site+"/admin/users" {
			t.Errorf("after step-up via step_up_url: %s", landed.Request.URL)
		}
	})

	t.Run("the policy's step_up obligation", func(t *testing.T) {
		t.Parallel()
		b := newBrowser(t, gh)
		mustStatus(t, b.login(site+"/", "dave"), http.StatusOK)
		p := b.fetch(http.MethodGet, site+"/policy-mfa")
		var body struct{ Error, Reason string }
		p.json(t, &body)
		if p.StatusCode != http.StatusUnauthorized || body.Error != "step_up_required" || body.Reason != "acr" {
			t.Fatalf("policy obligation: %d %+v", p.StatusCode, body)
		}
		form := b.navigate(site + "/policy-mfa")
		if done := b.submitLoginOTP(form, "dave", "444444"); done.StatusCode != http.StatusOK || done.Request.URL.Path != "/policy-mfa" {
			t.Fatalf("after the policy's step-up: %d %s", done.StatusCode, done.Request.URL)
		}
	})

	t.Run("a step-up as someone else is refused", func(t *testing.T) {
		t.Parallel()
		b := newBrowser(t, gh)
		mustStatus(t, b.login(site+"/", "alice"), http.StatusOK)
		p := b.navigate(site + "/admin/")
		p = b.submitLoginOTP(p, "carol", "333333")
		if p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "signed in as someone else") {
			t.Fatalf("step-up as carol in alice's session: %d at %s\n%s\n%s", p.StatusCode, p.Request.URL, fmtHops(b.hops), p.Body)
		}
		e := b.fetch(http.MethodGet, site+"/").echo(t)
		if e.Headers["X-Remote-User"][0] != "alice@example.com" {
			t.Errorf("the session switched identity: %v", e.Headers["X-Remote-User"])
		}
		if p := b.fetch(http.MethodGet, site+"/admin/"); p.StatusCode != http.StatusUnauthorized {
			t.Errorf("the refused step-up upgraded the session: %d", p.StatusCode)
		}
		if findAudit(auditLine("msg", "step-up refused", "user", "alice", "reason", "identity_mismatch"), gh) == nil {
			t.Error("no audit line for the refused step-up")
		}
	})

	t.Run("an IdP that ignores acr_values gets an error page, not a loop", func(t *testing.T) {
		t.Parallel()
		b := newBrowser(t, gh)
		mustStatus(t, b.login(weakSite+"/", "alice"), http.StatusOK)
		p := b.navigate(weakSite + "/admin/")
		if strings.Contains(p.Body, `name="otp"`) {
			t.Fatal("the weak IdP asked for a code")
		}
		p = b.submitLogin(p, "alice")
		if p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "not strong enough") {
			t.Fatalf("weak acr: %d\n%s\n%s", p.StatusCode, fmtHops(b.hops), p.Body)
		}
		if n := len(b.hops); n > 4 {
			t.Errorf("%d hops: a loop?\n%s", n, fmtHops(b.hops))
		}
	})

	t.Run("step out to a second provider", func(t *testing.T) {
		t.Parallel()
		b := newBrowser(t, gh)
		mustStatus(t, b.login(site+"/", "alice"), http.StatusOK)
		p := b.navigate(site + "/payouts/2026")
		if !strings.HasPrefix(p.Request.URL.String(), eid.Issuer) || !strings.Contains(p.Body, "national eID") {
			t.Fatalf("not sent to the eID provider:\n%s", fmtHops(b.hops))
		}
		p = b.submitLogin(p, "alice")
		mustStatus(t, p, http.StatusOK)
		e := p.echo(t)
		if e.Headers["X-Verified-Name"][0] != "Alice" || e.Headers["X-Remote-User"][0] != "alice@example.com" {
			t.Errorf("after the step-out: %v", e.Headers)
		}
		// The policy saw acr, auth_time and the listed claims, nothing more.
		var facts map[string]any
		gh.waitAudit(t, func(l map[string]any) bool { return l["path"] == "/payouts/2026" && l["result"] == "allow" })
		for _, l := range gh.auditLines() {
			if l["path"] == "/payouts/2026" && l["result"] == "allow" {
				in, _ := l["input"].(map[string]any)
				user, _ := in["user"].(map[string]any)
				v, _ := user["verifications"].(map[string]any)
				facts, _ = v["eid"].(map[string]any)
			}
		}
		if facts["acr"] != "urn:eid:loa:high" || facts["given_name"] != "Alice" || facts["birthdate"] != "1990-04-01" || len(facts) != 4 {
			b, _ := json.Marshal(facts)
			t.Errorf("verifications.eid in the policy input: %s", b)
		}
		// The primary session is untouched.
		if p := b.fetch(http.MethodGet, site+"/admin/"); p.StatusCode != http.StatusUnauthorized {
			t.Errorf("the step-out changed the primary acr: %d", p.StatusCode)
		}
	})

	t.Run("a step-out as someone else does not link", func(t *testing.T) {
		t.Parallel()
		b := newBrowser(t, gh)
		mustStatus(t, b.login(site+"/", "alice"), http.StatusOK)
		p := b.navigate(site + "/payouts/2026")
		p = b.submitLogin(p, "mallory")
		if p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "done by someone else") {
			t.Fatalf("link mismatch: %d\n%s", p.StatusCode, p.Body)
		}
		if p := b.fetch(http.MethodGet, site+"/payouts/2026"); p.StatusCode != http.StatusUnauthorized {
			t.Errorf("a mismatched step-out was linked: %d", p.StatusCode)
		}
	})
}
