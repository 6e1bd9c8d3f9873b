package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// rulesEnv is one Gatehouse process with several sites, each showing one
// session rule, sharing one IdP client (same app, issuer and client_id, so
// only the cookie secrets tell them apart).
type rulesEnv struct {
	idp   *idp
	up    *upstream
	gh    *gatehouse
	sites map[string]string // name → base URL
}

func startRules(t *testing.T) *rulesEnv {
	names := []string{"idle", "lifetime", "sealer", "rotated", "foreign", "managers", "spa"}
	sites := map[string]string{}
	var redirects, logouts []string
	for _, n := range names {
		base := fmt.Sprintf("https://localhost:%d", freePort(t))
		sites[n] = base
		redirects = append(redirects, base+"/.gatehouse/callback")
		logouts = append(logouts, base+"/.gatehouse/logout")
	}
	p := startIdP(t, idpClient{ClientID: "rules", ClientSecret: "rules-secret", RedirectURIs: redirects, PostLogoutRedirectURIs: logouts})
	up := startUpstream(t)
	oldSecret, newSecret, otherSecret := randomSecret(t), randomSecret(t), randomSecret(t)
	site := func(name, extra string, secrets ...string) string {
		return fmt.Sprintf(`%s {
	gatehouse {
		app rules
		issuer %s
		client_id rules
		client_secret {env.RULES_CLIENT_SECRET}
		scopes openid email profile groups
		cookie_secret %s
		identity_header X-Remote-User email
%s
	}
	reverse_proxy %s
}
`, sites[name], p.Issuer, strings.Join(secrets, " "), extra, up.Listener.Addr())
	}
	cf := site("idle", "\t\tidle_timeout 3s\n\t\tidle_ignore /poll", oldSecret) +
		site("lifetime", "\t\tsession_lifetime 4s", oldSecret) +
		site("sealer", "", oldSecret) +
		site("rotated", "", newSecret, oldSecret) +
		site("foreign", "", otherSecret) +
		site("managers", "\t\tallow_groups managers\n\t\tallow_email_domains partner.example", oldSecret) +
		site("spa", "\t\tidle_timeout 3s\n\t\tidle_activity any", oldSecret)
	var bases []string
	for _, n := range names {
		bases = append(bases, sites[n])
	}
	gh := startGatehouse(t, cf, []string{"RULES_CLIENT_SECRET=rules-secret"}, bases...)
	return &rulesEnv{idp: p, up: up, gh: gh, sites: sites}
}

// TestSessionRules checks one session rule per site of one gateway. The
// subtests share nothing but the gateway: each makes its own browser, so
// any runs alone, e.g. go test -run 'TestSessionRules/absolute_lifetime'.
// The three timed ones are parallel (they wait seconds each).
func TestSessionRules(t *testing.T) {
	env := startRules(t)
	for _, c := range []struct {
		name string
		run  func(t *testing.T, env *rulesEnv)
	}{
		{"idle timeout: polling does not keep a session alive, navigation does", sessionIdleTimeout},
		{"idle_activity any: background requests count", sessionIdleActivityAny},
		{"absolute lifetime ends an active session", sessionLifetime},
		{"key rotation keeps sessions; a foreign key does not open them", sessionKeyRotation},
		{"allow_groups and allow_email_domains", sessionAllowLists},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, env) })
	}
}

// sessionIdleTimeout: navigations keep a session alive past idle_timeout 3s;
// background fetches, an idle_ignore path and a page reloading itself do
// not, and the login after idle expiry asks for the password. Parallel.
func sessionIdleTimeout(t *testing.T, env *rulesEnv) {
	t.Parallel()
	base := env.sites["idle"]
	b := newBrowser(t, env.gh)
	mustStatus(t, b.login(base+"/dashboard", "alice"), http.StatusOK)
	// Navigations keep the session alive well past the idle timeout.
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		time.Sleep(1200 * time.Millisecond)
		p := b.navigate(base + "/dashboard")
		if p.StatusCode != http.StatusOK || len(b.hops) != 1 {
			t.Fatalf("an active user was logged out after %s:\n%s", time.Since(start).Round(time.Millisecond), fmtHops(b.hops))
		}
	}
	// Background polling, an ignored path and a page reloading itself
	// are not activity: the session ends 3 s after the last navigation.
	lastActivity := time.Now()
	var ended time.Duration
	for i := 0; i < 20 && ended == 0; i++ {
		time.Sleep(400 * time.Millisecond)
		var p page
		switch i % 3 {
		case 0:
			p = b.fetch(http.MethodGet, base+"/api/status")
		case 1:
			p = b.navigate(base + "/poll") // idle_ignore
		default:
			req, _ := http.NewRequest(http.MethodGet, base+"/dashboard", nil)
			req.Header.Set("Accept", "text/html")
			req.Header.Set("Sec-Fetch-Mode", "navigate")
			req.Header.Set("Sec-Fetch-Dest", "document") // no Sec-Fetch-User: a meta refresh
			p = b.do(req)
		}
		if p.StatusCode == http.StatusUnauthorized || isLoginForm(p) {
			ended = time.Since(lastActivity)
		}
	}
	if ended == 0 {
		t.Fatal("background requests kept an idle session alive for 8 s (idle_timeout 3s)")
	}
	if ended < 1500*time.Millisecond || ended > 4500*time.Millisecond {
		t.Errorf("the idle session ended %s after the last activity, want about 3s", ended)
	}
	t.Logf("idle session ended %s after the last navigation (idle_timeout 3s)", ended.Round(10*time.Millisecond))
	// The next login asks for the password again and returns to the page.
	p := b.navigate(base + "/dashboard?tab=2")
	if !isLoginForm(p) {
		t.Fatalf("after idle expiry there was no login form (silent single sign-on?):\n%s", fmtHops(b.hops))
	}
	loc, _ := url.Parse(b.hops[0].Header.Get("Location"))
	if loc.Query().Get("prompt") != "login" {
		t.Errorf("the login after idle expiry did not send prompt=login: %s", loc)
	}
	p = b.submitLogin(p, "alice")
	if p.Request.URL.String() != base+"/dashboard?tab=2" {
		t.Errorf("after re-login the browser is at %s", p.Request.URL)
	}
	if findAudit(auditLine("path", "/dashboard", "result", "login", "reason", "idle_timeout"), env.gh) == nil {
		t.Error("no audit line says idle_timeout")
	}
}

// sessionIdleActivityAny: with idle_activity any, background fetches alone
// keep the session alive past idle_timeout 3s. Parallel.
func sessionIdleActivityAny(t *testing.T, env *rulesEnv) {
	t.Parallel()
	base := env.sites["spa"]
	b := newBrowser(t, env.gh)
	mustStatus(t, b.login(base+"/", "alice"), http.StatusOK)
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		time.Sleep(1200 * time.Millisecond)
		if p := b.fetch(http.MethodGet, base+"/api/status"); p.StatusCode != http.StatusOK {
			t.Fatalf("with idle_activity any, fetches did not keep the session: %d after %s", p.StatusCode, time.Since(start))
		}
	}
}

// sessionLifetime: session_lifetime 4s ends a session that is in use,
// with reason session_lifetime, and the next login asks for the password.
// Parallel.
func sessionLifetime(t *testing.T, env *rulesEnv) {
	t.Parallel()
	base := env.sites["lifetime"]
	b := newBrowser(t, env.gh)
	mustStatus(t, b.login(base+"/", "alice"), http.StatusOK)
	loginAt := time.Now()
	var ended time.Duration
	for time.Since(loginAt) < 8*time.Second {
		time.Sleep(500 * time.Millisecond)
		if p := b.fetch(http.MethodPost, base+"/api/save"); p.StatusCode == http.StatusUnauthorized {
			var body struct{ Reason string }
			p.json(t, &body)
			if body.Reason != "session_lifetime" {
				t.Errorf("reason %q, want session_lifetime", body.Reason)
			}
			ended = time.Since(loginAt)
			break
		}
	}
	if ended == 0 {
		t.Fatal("an active session outlived session_lifetime 4s by 4 s")
	}
	if ended < 3*time.Second || ended > 5500*time.Millisecond {
		t.Errorf("the session ended %s after login, want about 4s", ended)
	}
	t.Logf("session ended %s after login (session_lifetime 4s)", ended.Round(10*time.Millisecond))
	p := b.navigate(base + "/")
	loc, _ := url.Parse(b.hops[0].Header.Get("Location"))
	if !isLoginForm(p) || loc.Query().Get("prompt") != "login" {
		t.Errorf("after the lifetime, login did not ask for the password again: %s", loc)
	}
}

// sessionKeyRotation: a cookie sealed with the old key opens on the site
// that still lists it, and not on a site with another key.
func sessionKeyRotation(t *testing.T, env *rulesEnv) {
	b := newBrowser(t, env.gh)
	mustStatus(t, b.login(env.sites["sealer"]+"/", "alice"), http.StatusOK)
	c := b.cookie(env.sites["sealer"], "__Host-gatehouse")
	try := func(site string) int {
		req, _ := http.NewRequest(http.MethodGet, env.sites[site]+"/api/me", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Cookie", c.Name+"="+c.Value)
		resp, err := transport(env.gh).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := try("rotated"); got != http.StatusOK {
		t.Errorf("a site whose old key sealed the cookie refused it: %d", got)
	}
	if got := try("foreign"); got != http.StatusUnauthorized {
		t.Errorf("a site with another key accepted the cookie: %d", got)
	}
	if findAudit(auditLine("path", "/api/me", "result", "unauthenticated", "reason", "invalid_cookie"), env.gh) == nil {
		t.Error("no audit line says invalid_cookie")
	}
}

// sessionAllowLists: allow_groups or allow_email_domains let a user in;
// anyone else gets a deny page that says why.
func sessionAllowLists(t *testing.T, env *rulesEnv) {
	base := env.sites["managers"]
	for user, want := range map[string]int{"alice": 403, "carol": 200, "dave": 200, "bob": 403} {
		b := newBrowser(t, env.gh)
		p := b.login(base+"/", user)
		if p.StatusCode != want {
			t.Errorf("%s: status %d, want %d", user, p.StatusCode, want)
		}
		if want == 403 && !strings.Contains(p.Body, "not in a team or email domain") {
			t.Errorf("%s: the deny page does not say why:\n%s", user, p.Body)
		}
	}
}
