package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestPages: Gatehouse's own pages against the real IdP, through the
// built binary. They name the signed-in user (their name, else their
// verified email, never their subject), name the helpdesk on errors,
// sign out from a button, and an approver who opens the approvals page
// without a session signs in once, asked at once for the second factor.
func TestPages(t *testing.T) {
	site := fmt.Sprintf("https://localhost:%d", freePort(t))
	// zed has neither a name nor a verified email: only a subject ("zed").
	p := startIdPWith(t, []string{`IDP_EXTRA_USERS={"zed":{"email":"zed@elsewhere.example","email_verified":false,"groups":["staff"],"otp":"999999"}}`},
		idpClient{ClientID: "pages", ClientSecret: "pages-secret",
			RedirectURIs: []string{site + "/.gatehouse/callback"}, PostLogoutRedirectURIs: []string{site + "/.gatehouse/logout"}})
	up := startUpstream(t)
	policy, _ := filepath.Abs("../policies")
	gh := startGatehouse(t, fmt.Sprintf(`%s {
	gatehouse {
		app projects
		issuer %s
		client_id pages
		client_secret pages-secret
		scopes openid email profile groups
		cookie_secret %s
		allow_groups managers
		policy %s
		policy_headers X-Projects-Role
		approval_step_up {
			acr urn:gatehouse:loa:mfa
			max_age 10m
		}
		support_contact "IT helpdesk, ext. 4040, help@corp.example"
	}
	reverse_proxy %s
}
`, site, p.Issuer, randomSecret(t), policy, up.Listener.Addr()), nil, site)

	t.Run("who is signed in, never the subject", func(t *testing.T) {
		for _, c := range []struct{ user, shown, hidden string }{
			{"alice", "Signed in as <strong>Alice Employee</strong>", ">alice<"},
			{"bob", "Signed in as <strong>Bob Contractor</strong>", "bob@contractor.example"}, // unverified
			{"zed", `<p class="user">Signed in</p>`, "zed"},
		} {
			b := newBrowser(t, gh)
			page := b.login(site+"/work", c.user)
			mustStatus(t, page, http.StatusForbidden)
			for _, want := range []string{c.shown, `action="/.gatehouse/logout"`, `href="/.gatehouse/access">My access</a>`,
				`href="/">Back to projects</a>`, "Need help? IT helpdesk, ext. 4040, help@corp.example"} {
				if !strings.Contains(page.Body, want) {
					t.Errorf("%s's deny page has no %s:\n%s", c.user, want, page.Body)
				}
			}
			if strings.Contains(page.Body, c.hidden) {
				t.Errorf("%s's deny page shows %q:\n%s", c.user, c.hidden, page.Body)
			}
			var js map[string]any
			b.fetch(http.MethodGet, site+"/work").json(t, &js)
			if js["support"] != "IT helpdesk, ext. 4040, help@corp.example" || js["reason"] != "not_allowed" {
				t.Errorf("%s's JSON deny: %v", c.user, js)
			}
		}
	})

	t.Run("an approver signs in once", func(t *testing.T) {
		b := newBrowser(t, gh)
		form := b.navigate(site + "/.gatehouse/approvals")
		hops := b.hops
		if !isLoginForm(form) || !strings.Contains(form.Body, `name="otp"`) {
			t.Fatalf("the first sign-in does not ask for the one-time code:\n%s", fmtHops(hops))
		}
		page := b.submitLoginOTP(form, "carol", "333333")
		hops = append(hops, b.hops...)
		mustStatus(t, page, http.StatusOK)
		if page.Request.URL.String() != site+"/.gatehouse/approvals" || !strings.Contains(page.Body, "<h1>Approvals</h1>") ||
			!strings.Contains(page.Body, "Signed in as <strong>Carol Manager</strong>") {
			t.Fatalf("not the approvals page at %s:\n%s", page.Request.URL, page.Body)
		}
		var authorizations, callbacks []string
		for _, h := range hops {
			u := h.Request.URL
			switch {
			case strings.HasPrefix(u.String(), p.Issuer+"/") && u.Path == "/auth":
				authorizations = append(authorizations, u.String())
				if q := u.Query(); q.Get("acr_values") != "urn:gatehouse:loa:mfa" || q.Get("max_age") != "600" || q.Get("prompt") != "login" {
					t.Errorf("the authorization request does not ask for the step-up: %s", u)
				}
			case u.Path == "/.gatehouse/callback":
				callbacks = append(callbacks, u.Path)
			}
		}
		if len(authorizations) != 1 || len(callbacks) != 1 {
			t.Errorf("%d authorization requests and %d callbacks, want one of each:\n%s", len(authorizations), len(callbacks), fmtHops(hops))
		}
	})

	t.Run("sign out from a deny page, in Chromium", func(t *testing.T) {
		c := newChrome(t, "alice")
		c.do("opening the app", chromedp.Navigate(site+"/work"))
		c.signIn("alice", "")
		c.waitFor(site+"/work", "Access denied")
		for _, want := range []string{"Signed in as Alice Employee", "Back to projects", "My access", "Need help? IT helpdesk, ext. 4040"} {
			if !strings.Contains(c.text(), want) {
				c.fail("the deny page does not say %q", want)
			}
		}
		c.do("signing out", chromedp.Click(chromedp.CSS("form[action='/.gatehouse/logout'] button")))
		c.waitFor(p.Issuer, "Sign out") // the IdP asks to confirm
		c.do("confirming", chromedp.Click(chromedp.CSS("button[value=yes]")))
		c.waitFor(site+"/.gatehouse/logout", "You are signed out")
		if text := c.text(); strings.Contains(text, "Signed in") || strings.Contains(text, "Sign out") || strings.Contains(text, "Alice") {
			c.fail("the signed-out page still names someone: %s", text)
		}
		if findAudit(auditLine("result", "logout", "user", "alice", "reason", "idp_logout"), gh) == nil {
			t.Error("no audit line for the sign-out")
		}
		c.do("coming back", chromedp.Navigate(site+"/work"))
		c.waitFor(p.Issuer, "Sign in") // the password is asked again
	})
}
