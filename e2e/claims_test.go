package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileClaims: accounts whose claims an attacker controls, at the
// real IdP. An email claim that is not exactly one plain address is no
// email (email rules and headers do not apply); other claim values with
// control characters are left out; what the allow rules decided on is
// exactly what the upstream is told.
func TestHostileClaims(t *testing.T) {
	base := fmt.Sprintf("https://localhost:%d", freePort(t))
	hostile := map[string]string{
		"mal1": "a@evil.com@corp.test",
		"mal2": "carol@evil.com\u0000@corp.test",
		"mal3": `"a@b"@corp.test`,
		"mal4": "a@corp.test (x)",
		"mal5": "Mallory <m@corp.test>",
		"mal6": "m@corp.test\r\nX-Injected: 1",
		"mal7": "m@corp.test, boss@corp.test",
		"mal8": "m@corp.test\u202e",
	}
	users := map[string]map[string]any{
		"gina":  {"name": "Gina", "email": "gina@corp.test", "email_verified": true, "groups": []string{}},
		"gina2": {"name": "Gina Two", "email": "Gina2@CORP.Test", "email_verified": true, "groups": []string{}},
		// In an allowed group, with every claim hostile.
		"malstaff": {"name": "Mal\u202eevil", "email": "x@evil.com@corp.test", "email_verified": true,
			"groups": []string{"staff", "admins\nX-Injected: 1"}},
	}
	for login, email := range hostile {
		users[login] = map[string]any{"name": "Mallory", "email": email, "email_verified": true, "groups": []string{}}
	}
	extra, _ := json.Marshal(users)
	p := startIdPWith(t, []string{"IDP_EXTRA_USERS=" + string(extra)}, idpClient{ClientID: "claims", ClientSecret: "claims-secret",
		RedirectURIs: []string{base + "/.gatehouse/callback"}})
	up := startUpstream(t)
	gh := startGatehouse(t, fmt.Sprintf(`%s {
	gatehouse {
		app claims
		issuer %s
		client_id claims
		client_secret claims-secret
		scopes openid email profile groups
		cookie_secret %s
		allow_email_domains corp.test
		allow_groups staff
		identity_header X-Remote-User email
		identity_header X-Remote-Name name
		identity_header X-Remote-Groups groups
	}
	reverse_proxy %s
}
`, base, p.Issuer, randomSecret(t), up.Listener.Addr()), nil, base)

	t.Run("plain addresses are used, the domain in lowercase", func(t *testing.T) {
		for login, want := range map[string]string{"gina": "gina@corp.test", "gina2": "Gina2@corp.test"} {
			page := newBrowser(t, gh).login(base+"/"+login, login)
			mustStatus(t, page, http.StatusOK)
			if got := page.echo(t).Headers["X-Remote-User"]; len(got) != 1 || got[0] != want {
				t.Errorf("%s: X-Remote-User %q, want %q", login, got, want)
			}
		}
	})
	for login, email := range hostile {
		t.Run("email "+fmt.Sprintf("%q", email), func(t *testing.T) {
			before := up.hits.Load()
			page := newBrowser(t, gh).login(base+"/"+login, login)
			// Allowed only by the email domain, and the email is no email.
			mustStatus(t, page, http.StatusForbidden)
			if up.hits.Load() != before {
				t.Error("the upstream was reached")
			}
			line := gh.waitAudit(t, func(l map[string]any) bool { return l["user"] == login && l["result"] == "login_ok" })
			if line == nil {
				t.Fatal("no login_ok audit line")
			}
			if refused := fmt.Sprint(line["claims_refused"]); !strings.Contains(refused, "email: not a single plain address") {
				t.Errorf("claims_refused %s", refused)
			}
			if line["email"] != "" {
				t.Errorf("the audit line names email %q", line["email"])
			}
			if strings.Contains(gh.log.String(), "evil.com") {
				t.Error("the refused value was logged")
			}
		})
	}
	t.Run("an allowed user's hostile claims never reach the upstream", func(t *testing.T) {
		page := newBrowser(t, gh).login(base+"/staff", "malstaff")
		mustStatus(t, page, http.StatusOK)
		e := page.echo(t)
		if got := e.Headers["X-Remote-User"]; got != nil {
			t.Errorf("X-Remote-User %q, want none", got)
		}
		if got := e.Headers["X-Remote-Name"]; got != nil {
			t.Errorf("X-Remote-Name %q, want none", got)
		}
		if got := e.Headers["X-Remote-Groups"]; len(got) != 1 || got[0] != "staff" {
			t.Errorf("X-Remote-Groups %q, want [staff]", got)
		}
		if _, ok := e.Headers["X-Injected"]; ok {
			t.Error("a header was injected")
		}
		line := gh.waitAudit(t, func(l map[string]any) bool { return l["user"] == "malstaff" && l["result"] == "login_ok" })
		if line == nil || len(line["claims_refused"].([]any)) != 3 {
			t.Errorf("audit line %v, want 3 refused claims (email, name, a group)", line)
		}
	})
}

// TestAssertionNeedsAFixedIssuer: Gatehouse refuses to start with a
// signed assertion whose issuer it would have to take from the request.
func TestAssertionNeedsAFixedIssuer(t *testing.T) {
	dir := t.TempDir()
	key := writeKey(t, dir, "a.pem")
	config := filepath.Join(dir, "Caddyfile")
	site := `{
	admin off
}
https://app.example.com, https://other.example.com {
	gatehouse {
		app signed
		issuer https://idp.example.com
		client_id x
		cookie_secret 0123456789abcdef0123456789abcdef0123
		%s
		assertion_header X-Gatehouse-Assertion {
			key ` + key + `
			claims sub
			%s
		}
	}
	respond ok
}
`
	for name, c := range map[string]struct {
		external, issuer string
		ok               bool
	}{
		"neither":      {"", "", false},
		"external_url": {"external_url https://app.example.com", "", true},
		"issuer":       {"", "issuer https://app.example.com", true},
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(config, []byte(fmt.Sprintf(site, c.external, c.issuer)), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(gatehouseBin, "validate", "--config", config, "--adapter", "caddyfile").CombinedOutput()
			if c.ok != (err == nil) {
				t.Fatalf("validate: %v\n%s", err, out)
			}
			if !c.ok && !strings.Contains(string(out), "assertion_header: needs a fixed issuer") {
				t.Errorf("the error does not say what to fix:\n%s", out)
			}
		})
	}
}
