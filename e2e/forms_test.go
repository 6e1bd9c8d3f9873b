package e2e

import (
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// formApp is an upstream app with a form of its own (an order form with
// its own CSRF token, no script) whose POST answers with what it
// received, and a page on its own origin (another site, as far as
// Gatehouse's site is concerned) that posts to Gatehouse's site.
type formApp struct {
	*httptest.Server
	token string // the app's own CSRF token

	mu    sync.Mutex
	posts []receivedPost
}

// receivedPost is one POST the app received: its URL and its fields in
// the order they came.
type receivedPost struct {
	URI    string
	Fields [][2]string
}

func startFormApp(t *testing.T, site string) *formApp {
	t.Helper()
	a := &formApp{token: "app-csrf-" + randomSecret(t)[:12]}
	page := func(w http.ResponseWriter, title, body string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>%s</title></head><body>%s</body></html>`, title, body)
	}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/form":
			page(w, "New order", `<h1>New order</h1>
<form method="post" action="/orders?draft=1">
<input type="hidden" name="csrf_token" value="`+a.token+`">
<p><label for="title">Title</label> <input id="title" name="title"></p>
<p><label for="notes">Notes</label> <textarea id="notes" name="notes"></textarea></p>
<p><label for="size">Size</label> <select id="size" name="size"><option>small</option><option selected>medium</option><option>large</option></select></p>
<p><label><input type="checkbox" name="rush" value="yes"> Rush</label></p>
<p><button type="submit" name="action" value="save">Save</button></p>
</form>`)
		case r.Method == http.MethodGet && r.URL.Path == "/upload":
			page(w, "New expense", `<h1>New expense</h1>
<form method="post" action="/expenses" enctype="multipart/form-data">
<input type="hidden" name="csrf_token" value="`+a.token+`">
<p><label for="amount">Amount</label> <input id="amount" name="amount"></p>
<p><label for="receipt">Receipt</label> <input type="file" id="receipt" name="receipt"></p>
<p><label for="photo">Photo (optional)</label> <input type="file" id="photo" name="photo"></p>
<p><button type="submit">Submit</button></p>
</form>`)
		case r.Method == http.MethodPost && r.URL.Path == "/expenses":
			p := receivedPost{URI: r.URL.RequestURI()}
			mr, err := r.MultipartReader()
			for err == nil {
				part, perr := mr.NextPart()
				if perr != nil {
					break
				}
				b, _ := io.ReadAll(part)
				if part.FileName() != "" || strings.Contains(part.Header.Get("Content-Disposition"), "filename=") {
					p.Fields = append(p.Fields, [2]string{part.FormName(), "file " + part.FileName() + ": " + string(b)})
				} else {
					p.Fields = append(p.Fields, [2]string{part.FormName(), string(b)})
				}
			}
			a.mu.Lock()
			a.posts = append(a.posts, p)
			a.mu.Unlock()
			page(w, "Expense saved", "<h1>Expense saved</h1>")
		case r.Method == http.MethodGet && r.URL.Path == "/evil":
			// Another origin than Gatehouse's site: what another site's
			// page can make a signed-out user's browser post.
			page(w, "Win a prize", `<form method="post" action="`+site+`/orders?draft=1">
<input type="hidden" name="csrf_token" value="guessed"><input type="hidden" name="title" value="transfer everything">
<p><button type="submit">Claim</button></p></form>`)
		case r.Method == http.MethodPost && r.URL.Path == "/orders":
			b, _ := io.ReadAll(r.Body)
			p := receivedPost{URI: r.URL.RequestURI()}
			for part := range strings.SplitSeq(string(b), "&") {
				k, v, _ := strings.Cut(part, "=")
				k, _ = url.QueryUnescape(k)
				v, _ = url.QueryUnescape(v)
				p.Fields = append(p.Fields, [2]string{k, v})
			}
			a.mu.Lock()
			a.posts = append(a.posts, p)
			a.mu.Unlock()
			if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || len(p.Fields) == 0 || p.Fields[0] != [2]string{"csrf_token", a.token} {
				w.WriteHeader(http.StatusForbidden)
				page(w, "Refused", "<p>Refused: the form's token is wrong.</p>")
				return
			}
			page(w, "Order saved", "<h1>Order saved</h1><p>"+html.EscapeString(p.Fields[1][1])+"</p>")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *formApp) received() []receivedPost {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]receivedPost(nil), a.posts...)
}

// TestNoLostForms: in headless Chromium, against the real IdP and the
// built binary with Redis as the grant store, a form posted after the
// session idled out is kept while the user signs in again, and one
// click sends the app exactly the fields first sent (its own CSRF token
// included); when someone else signs in instead, the form is dropped
// with a page saying so and the app never receives it; and a post from
// another site is never kept.
func TestNoLostForms(t *testing.T) {
	site := fmt.Sprintf("https://localhost:%d", freePort(t))
	p := startIdP(t, idpClient{ClientID: "forms", ClientSecret: "forms-secret",
		RedirectURIs: []string{site + "/.gatehouse/callback"}, PostLogoutRedirectURIs: []string{site + "/.gatehouse/logout"}})
	app := startFormApp(t, site)
	redis := startRedis(t)
	gh := startGatehouse(t, fmt.Sprintf(`%s {
	gatehouse {
		app orders
		issuer %s
		client_id forms
		client_secret forms-secret
		scopes openid email profile
		cookie_secret %s
		idle_timeout 5s
		grants %s
		identity_header X-Remote-User email
	}
	reverse_proxy %s
}
`, site, p.Issuer, randomSecret(t), redis.URL(), app.Listener.Addr()), nil, site)

	// fillAndIdle signs alice in, fills in the order form, and waits for
	// the session to idle out before she clicks Save.
	const title, notes = "Rush order ✓ <b>été</b>", "line one\nline two & more"
	fillAndIdle := func(c *chrome) {
		c.do("opening the form", chromedp.Navigate(site+"/form"))
		c.signIn("alice", "")
		c.waitFor(site+"/form", "New order")
		c.do("filling in the form",
			chromedp.SendKeys(chromedp.CSS("#title"), title),
			chromedp.SendKeys(chromedp.CSS("#notes"), notes),
			chromedp.SetValue(chromedp.CSS("#size"), "large"),
			chromedp.Click(chromedp.CSS("input[name=rush]")),
		)
		time.Sleep(6 * time.Second) // idle_timeout 5s: the user was away
		c.do("saving", chromedp.Click(chromedp.CSS("button[value=save]")))
	}
	want := [][2]string{{"csrf_token", app.token}, {"title", title}, {"notes", strings.ReplaceAll(notes, "\n", "\r\n")},
		{"size", "large"}, {"rush", "yes"}, {"action", "save"}}

	t.Run("kept, signed in again, sent again", func(t *testing.T) {
		c := newChrome(t, "alice")
		fillAndIdle(c)
		// Idled out: the password is asked again, then the form waits.
		c.signIn("alice", "")
		c.waitFor(site+"/.gatehouse/resubmit", "Send your form again")
		if got := app.received(); len(got) != 0 {
			c.fail("the app received the post made without a session: %+v", got)
		}
		c.do("sending again", chromedp.Click(chromedp.CSS(`form[action^="/orders"] button[type=submit]`)))
		c.waitFor(site+"/orders?draft=1", "Order saved")
		got := app.received()
		if len(got) != 1 || got[0].URI != "/orders?draft=1" || !reflect.DeepEqual(got[0].Fields, want) {
			c.fail("the app received %+v\nwant the original fields %q", got, want)
		}
		for _, ev := range []string{"form kept", "form restored"} {
			if gh.waitAudit(t, auditLine("msg", ev, "user", "alice", "path", "/orders")) == nil {
				t.Errorf("no %q audit line", ev)
			}
		}
		// The form is sent once: the page is empty now.
		c.do("reloading the resubmit page", chromedp.Navigate(site+"/.gatehouse/resubmit"))
		c.waitFor(site+"/.gatehouse/resubmit", "Nothing to send")
	})

	t.Run("someone else signs in: dropped, never sent", func(t *testing.T) {
		before := len(app.received())
		c := newChrome(t, "alice-then-bob")
		fillAndIdle(c)
		c.signIn("bob", "")
		c.waitFor(site+"/.gatehouse/resubmit", "deleted and not sent")
		if strings.Contains(c.text(), "Rush order") || strings.Contains(c.text(), app.token) {
			c.fail("bob is shown alice's form")
		}
		if gh.waitAudit(t, auditLine("msg", "form dropped", "why", "form_other_user", "user", "alice")) == nil {
			t.Error("no form dropped (form_other_user) audit line")
		}
		c.do("opening the resubmit page again", chromedp.Navigate(site+"/.gatehouse/resubmit"))
		c.waitFor(site+"/.gatehouse/resubmit", "Nothing to send")
		if got := app.received(); len(got) != before {
			t.Errorf("the app received a dropped form: %+v", got[before:])
		}
	})

	t.Run("a post from another site is never kept", func(t *testing.T) {
		before := len(app.received())
		c := newChrome(t, "victim")
		c.do("opening another site", chromedp.Navigate(app.URL+"/evil"))
		c.waitFor(app.URL+"/evil", "Claim")
		c.do("claiming", chromedp.Click(chromedp.CSS("button[type=submit]")))
		c.waitFor(site+"/orders", "came from another site")
		if gh.waitAudit(t, auditLine("msg", "form dropped", "why", "form_cross_site")) == nil {
			t.Error("no form dropped (form_cross_site) audit line")
		}
		if got := app.received(); len(got) != before {
			t.Errorf("the app received another site's post: %+v", got[before:])
		}
	})

	t.Run("multipart: the file is chosen again", func(t *testing.T) {
		before := len(app.received())
		receipt := filepath.Join(t.TempDir(), "receipt.txt")
		if err := os.WriteFile(receipt, []byte("taxi 42.00"), 0o600); err != nil {
			t.Fatal(err)
		}
		c := newChrome(t, "expenses")
		c.do("opening the form", chromedp.Navigate(site+"/upload"))
		c.signIn("alice", "")
		c.waitFor(site+"/upload", "New expense")
		c.do("filling in the form", chromedp.SendKeys(chromedp.CSS("#amount"), "42.00"),
			chromedp.SetUploadFiles(chromedp.CSS("#receipt"), []string{receipt}))
		time.Sleep(6 * time.Second)
		c.do("submitting", chromedp.Click(chromedp.CSS("button[type=submit]")))
		c.signIn("alice", "")
		c.waitFor(site+"/.gatehouse/resubmit", "choose it again")
		if !strings.Contains(c.text(), "you had chosen receipt.txt") {
			c.fail("the page does not name the file to choose again")
		}
		c.do("choosing the file again and sending",
			chromedp.SetUploadFiles(chromedp.CSS(`form[action="/expenses"] input[name=receipt]`), []string{receipt}),
			chromedp.Click(chromedp.CSS(`form[action="/expenses"] button[type=submit]`)))
		c.waitFor(site+"/expenses", "Expense saved")
		got := app.received()[before:]
		want := [][2]string{{"csrf_token", app.token}, {"amount", "42.00"}, {"receipt", "file receipt.txt: taxi 42.00"}, {"photo", "file : "}}
		if len(got) != 1 || !reflect.DeepEqual(got[0].Fields, want) {
			c.fail("the app received %+v\nwant %q", got, want)
		}
	})

	// Nothing the users typed is in any log line.
	for _, secret := range []string{"Rush order", "line one", app.token, "transfer everything"} {
		if strings.Contains(gh.log.String(), secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
}
