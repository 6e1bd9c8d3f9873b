package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const chromiumPath = "/usr/bin/chromium"

// chrome is one headless Chromium with a fresh profile: one person's
// browser.
type chrome struct {
	t    *testing.T
	name string
	ctx  context.Context
}

func newChrome(t *testing.T, name string) *chrome {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is required for the browser tests: apt-get install -y chromium (./test.sh installs it)", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		// Caddy's local CA is not in this fresh profile's trust store.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(412, 915), // a phone
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return &chrome{t: t, name: name, ctx: ctx}
}

// fail saves a screenshot and the page's HTML in the test's artifact
// directory, then fails the test.
func (c *chrome) fail(format string, args ...any) {
	c.t.Helper()
	dir := c.t.ArtifactDir()
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(90)); err == nil {
		_ = os.WriteFile(filepath.Join(dir, c.name+".png"), png, 0o644)
	}
	if html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html"))); err == nil {
		_ = os.WriteFile(filepath.Join(dir, c.name+".html"), []byte(html), 0o644)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	text := c.text()
	if len(text) > 600 {
		text = text[:600]
	}
	c.t.Fatalf("%s at %s: %s (screenshot and HTML in %s)\npage text: %s", c.name, loc, fmt.Sprintf(format, args...), dir, text)
}

func (c *chrome) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		c.fail("%s: %v", what, err)
	}
}

func (c *chrome) location() string {
	loc, _ := chromedp.Run(c.ctx, chromedp.Location())
	return loc
}

func (c *chrome) text() string {
	s, _ := chromedp.Run(c.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	return s
}

// waitFor waits until the page's URL starts with prefix and its text
// contains want.
func (c *chrome) waitFor(prefix, want string) {
	c.t.Helper()
	if !eventually(15*time.Second, func() bool { return strings.HasPrefix(c.location(), prefix) && strings.Contains(c.text(), want) }) {
		c.fail("waited for %s with %q", prefix, want)
	}
	c.checkAccessible()
}

// a11yCheck finds basic accessibility problems on a page: a language, a
// title, a label for every field, a keyboard-usable submit for every
// form, no positive or field-hiding tabindex, no empty buttons or links.
const a11yCheck = `(() => {
  const p = [];
  if (document.contentType !== 'text/html') return p;
  if (!document.documentElement.lang) p.push('html has no lang');
  if (!document.title.trim()) p.push('no title');
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    const label = (el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]')) || el.closest('label') || el.getAttribute('aria-label');
    if (!label) p.push('field without a label: ' + (el.name || el.id || el.tagName));
  }
  for (const f of document.forms) {
    const inside = f.querySelector('button:not([type=button]), input[type=submit]');
    const outside = f.id && document.querySelector('button[form="' + CSS.escape(f.id) + '"]');
    if (!inside && !outside) p.push('form without a submit button: ' + (f.action || f.id));
  }
  for (const el of document.querySelectorAll('[tabindex]')) {
    const t = parseInt(el.getAttribute('tabindex'), 10);
    if (t > 0 || (t < 0 && el.matches('a[href], button, input, select, textarea'))) p.push('tabindex ' + t + ' on ' + el.tagName);
  }
  for (const el of document.querySelectorAll('button, a[href]')) {
    if (!el.textContent.trim() && !el.getAttribute('aria-label')) p.push('empty ' + el.tagName);
  }
  return p;
})()`

func (c *chrome) checkAccessible() {
	c.t.Helper()
	problems, err := chromedp.Run(c.ctx, chromedp.Evaluate[[]string](a11yCheck))
	if err != nil {
		c.fail("accessibility check: %v", err)
	}
	if len(problems) > 0 {
		c.fail("accessibility: %s", strings.Join(problems, "; "))
	}
}

// signIn fills in the IdP's login form, with a one-time code when asked.
func (c *chrome) signIn(user, otp string) {
	c.t.Helper()
	c.waitFor("http://127.0.0.1", "Sign in")
	steps := []chromedp.Action[chromedp.Void]{
		chromedp.SendKeys(chromedp.CSS("#login"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), user+"-pw"),
	}
	if otp != "" {
		steps = append(steps, chromedp.WaitVisible(chromedp.CSS("#otp")), chromedp.SendKeys(chromedp.CSS("#otp"), otp))
	}
	steps = append(steps, chromedp.Click(chromedp.CSS("button[type=submit]")))
	c.do("signing in as "+user, steps...)
}

// TestBrowserJourney walks the whole journey in real headless Chromium:
// login, idle logout and return, step-up, a denied request for temporary
// access, a manager's approval with step-up, my access, logout.
func TestBrowserJourney(t *testing.T) {
	site := fmt.Sprintf("https://localhost:%d", freePort(t))
	p := startIdP(t, idpClient{ClientID: "journey", ClientSecret: "journey-secret",
		RedirectURIs: []string{site + "/.gatehouse/callback"}, PostLogoutRedirectURIs: []string{site + "/.gatehouse/logout"}})
	up := startUpstream(t)
	policy, _ := filepath.Abs("../policies")
	gh := startGatehouse(t, fmt.Sprintf(`%s {
	gatehouse {
		app projects
		issuer %s
		client_id journey
		client_secret journey-secret
		scopes openid email profile groups
		cookie_secret %s
		idle_timeout 8s
		grants file://%s
		policy %s
		policy_headers X-Projects-Role
		approval_step_up {
			acr urn:gatehouse:loa:mfa
			max_age 10m
		}
		step_up /work/secret /work/secret/* {
			acr urn:gatehouse:loa:mfa
			max_age 5m
		}
		identity_header X-Remote-User email
	}
	reverse_proxy %s
}
`, site, p.Issuer, randomSecret(t), filepath.Join(t.TempDir(), "grants.db"), policy, up.Listener.Addr()), nil, site)
	_ = gh

	worker := newChrome(t, "worker")
	// Login through the IdP's real form.
	worker.do("opening the app", chromedp.Navigate(site+"/work/1"))
	worker.signIn("alice", "")
	worker.waitFor(site+"/work/1", "alice@example.com")

	// Idle: logged out, the password is asked again, back where they were.
	time.Sleep(8500 * time.Millisecond)
	worker.do("coming back", chromedp.Navigate(site+"/work/2?tab=notes"))
	worker.waitFor("http://127.0.0.1", "Sign in") // no silent single sign-on
	worker.signIn("alice", "")
	worker.waitFor(site+"/work/2?tab=notes", "alice@example.com")

	// Step-up with the second factor on a sensitive path.
	worker.do("opening a sensitive page", chromedp.Navigate(site+"/work/secret/plan"))
	worker.waitFor("http://127.0.0.1", "One-time code")
	worker.signIn("alice", "111111")
	worker.waitFor(site+"/work/secret/plan", "alice@example.com")

	// Denied; requests temporary access from the deny page, by keyboard.
	worker.do("opening admin", chromedp.Navigate(site+"/admin/"))
	worker.waitFor(site+"/admin/", "Request temporary access")
	worker.do("requesting access",
		chromedp.SendKeys(chromedp.CSS("#reason"), "rotate the signing keys"),
		chromedp.SetValue(chromedp.CSS("#duration"), "1h0m0s"),
		chromedp.Focus(chromedp.CSS("form[action='/.gatehouse/request'] button[type=submit]")),
		chromedp.KeyEvent("\r"),
	)
	worker.waitFor(site+"/.gatehouse/access", "pending")

	// A manager approves it on the approvals page, signing in once: the
	// first sign-in asks for the second factor the page needs.
	manager := newChrome(t, "manager")
	manager.do("opening approvals", chromedp.Navigate(site+"/.gatehouse/approvals"))
	manager.waitFor("http://127.0.0.1", "One-time code")
	manager.signIn("carol", "333333")
	manager.waitFor(site+"/.gatehouse/approvals", "rotate the signing keys")
	manager.do("approving", chromedp.Click(chromedp.CSS("button[value=approve]")))
	manager.waitFor(site+"/.gatehouse/approvals?notice=approved", "Approved")

	// The worker reloads and is in, and sees the grant and its time left.
	worker.do("reloading admin", chromedp.Navigate(site+"/admin/"))
	worker.waitFor(site+"/admin/", "alice@example.com")
	worker.do("opening my access", chromedp.Navigate(site+"/.gatehouse/access"))
	worker.waitFor(site+"/.gatehouse/access", "projects-admin")
	if text := worker.text(); !strings.Contains(text, "left") || !strings.Contains(text, "carol@example.com") {
		worker.fail("my access does not show the time left and the approver: %s", text)
	}

	// Logs out (the IdP asks to confirm).
	worker.do("logging out", chromedp.Navigate(site+"/.gatehouse/logout"))
	worker.waitFor("http://127.0.0.1", "Sign out")
	worker.do("confirming", chromedp.Click(chromedp.CSS("button[value=yes]")))
	worker.waitFor(site+"/.gatehouse/logout", "signed out")
	worker.do("after logout", chromedp.Navigate(site+"/work/1"))
	worker.waitFor("http://127.0.0.1", "Sign in")
}
