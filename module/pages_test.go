package module

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/gate"
)

// renderPage renders a as h's pages do for a browser (html) or an API.
func renderPage(h *Handler, html bool, status int, a *gate.Answer) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.pages.render(w, html, status, a)
	return w
}

// TestPagesShowWhoAndWhere: every page says who is signed in and offers
// "Back to <app>", "My access" and a sign-out form; a page for someone
// not signed in names nobody and offers no sign-out.
func TestPagesShowWhoAndWhere(t *testing.T) {
	h, _ := provision(t, validHandler())
	for _, c := range []struct {
		name    string
		a       *gate.Answer
		want    []string
		notWant []string
	}{
		{"by name", &gate.Answer{Message: "m", SignedIn: true, User: "Alice <Employee>", Return: "/reports?page=2"},
			[]string{`Signed in as <strong>Alice &lt;Employee&gt;</strong>`, `<form method="post" action="/.gatehouse/logout"`,
				`<button type="submit" class="link">Sign out</button>`, `<a href="/.gatehouse/access">My access</a>`,
				`<a href="/reports?page=2">Back to payroll</a>`},
			nil},
		{"unnamed", &gate.Answer{Message: "m", SignedIn: true},
			[]string{`<p class="user">Signed in</p>`, "Sign out", "My access", `<a href="/">Back to payroll</a>`},
			[]string{"Signed in as"}},
		{"nobody", &gate.Answer{Message: "m", User: "ignored without SignedIn"},
			[]string{`<a href="/">Back to payroll</a>`},
			[]string{"Signed in", "Sign out", "/.gatehouse/logout", "My access", "ignored"}},
	} {
		for _, page := range []string{"", "access", "approvals", "request"} {
			a := *c.a
			a.Page = page
			switch page {
			case "request":
				a.Data = gate.RequestForm{Resource: "db"}
			case "access", "approvals":
				a.Data = gate.AccessPage{}
			}
			body := renderPage(h, true, http.StatusOK, &a).Body.String()
			for _, s := range c.want {
				if !strings.Contains(body, s) {
					t.Errorf("%s, page %q: no %s in\n%s", c.name, page, s, body)
				}
			}
			for _, s := range c.notWant {
				if strings.Contains(body, s) {
					t.Errorf("%s, page %q: %s in\n%s", c.name, page, s, body)
				}
			}
		}
	}
}

// TestSupportContact: support_contact is on every error page and in
// every JSON error answer (the deny's with its request form too), never
// on a page that is not an error.
func TestSupportContact(t *testing.T) {
	h := validHandler()
	h.SupportContact = "IT helpdesk, ext. 4040, <help@corp.example>"
	h, _ = provision(t, h)
	page := renderPage(h, true, http.StatusForbidden, &gate.Answer{Error: "forbidden", Message: "m"}).Body.String()
	if !strings.Contains(page, `<p class="support">Need help? IT helpdesk, ext. 4040, &lt;help@corp.example&gt;</p>`) {
		t.Errorf("error page without the support contact:\n%s", page)
	}
	if ok := renderPage(h, true, http.StatusOK, &gate.Answer{Message: "m"}).Body.String(); strings.Contains(ok, "helpdesk") {
		t.Errorf("a page that is no error names the support contact:\n%s", ok)
	}
	deny := &gate.Answer{Error: "forbidden", Message: "m"}
	deny.JSON = struct {
		*gate.Answer
		RequestGrant map[string]string `json:"request_grant"`
	}{deny, map[string]string{"resource": "db"}}
	for _, a := range []*gate.Answer{{Error: "unauthenticated", Message: "m"}, deny} {
		var body map[string]any
		w := renderPage(h, false, http.StatusUnauthorized, a)
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body["support"] != h.SupportContact || body["error"] == nil {
			t.Errorf("JSON error answer: %s", w.Body)
		}
	}
	// Without support_contact the field is left out.
	plain, _ := provision(t, validHandler())
	if w := renderPage(plain, false, http.StatusForbidden, &gate.Answer{Error: "forbidden"}); strings.Contains(w.Body.String(), "support") {
		t.Errorf("support without support_contact: %s", w.Body)
	}
}

// cspStyleHash is the style-src hash of a stylesheet.
func cspStyleHash(css []byte) string {
	sum := sha256.Sum256(css)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// TestPagesDir: templates in pages_dir replace the embedded ones, file
// by file; the CSP allows the stylesheet in use, whichever it is; forms
// may go to the site and its IdPs, nowhere else.
func TestPagesDir(t *testing.T) {
	embedded, _ := provision(t, validHandler())
	css, _ := embeddedPages.ReadFile("pages/style.css")
	w := renderPage(embedded, true, http.StatusForbidden, &gate.Answer{Message: "m"})
	csp := w.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "style-src "+cspStyleHash(css)+";") || !strings.Contains(csp, "form-action 'self' https://idp.invalid;") {
		t.Errorf("CSP %q", csp)
	}

	dir := t.TempDir()
	acmeCSS := []byte("body{background:#fff8e1}\n")
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("style.css", string(acmeCSS))
	write("layout.html", `{{define "page"}}<!DOCTYPE html><html lang="en"><head><title>{{.Title}}</title><style>{{.Style}}</style></head>
<body><p>ACME Corp</p>{{if .SignedIn}}{{.User}}{{end}}{{block "content" .}}<p>{{.Message}}</p>{{end}}</body></html>{{end}}`)
	h := validHandler()
	h.PagesDir = dir
	h, _ = provision(t, h)
	w = renderPage(h, true, http.StatusForbidden, &gate.Answer{Message: "no entry", SignedIn: true, User: "Alice"})
	body := w.Body.String()
	if !strings.Contains(body, "<p>ACME Corp</p>Alice<p>no entry</p>") || !strings.Contains(body, "<style>"+string(acmeCSS)+"</style>") {
		t.Errorf("the replaced layout is not used:\n%s", body)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "style-src "+cspStyleHash(acmeCSS)+";") {
		t.Errorf("the CSP does not follow the replaced stylesheet: %q", csp)
	}
	// A page not replaced keeps its embedded content, in the new layout.
	body = renderPage(h, true, http.StatusForbidden, &gate.Answer{Message: "m", Page: "request", Data: gate.RequestForm{Resource: "db"}}).Body.String()
	if !strings.Contains(body, "ACME Corp") || !strings.Contains(body, `action="/.gatehouse/request"`) {
		t.Errorf("request page in the replaced layout:\n%s", body)
	}
}

// TestPagesDirErrors: a page_dir that cannot serve stops the start, with
// an error naming the directory and the file.
func TestPagesDirErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "layout.html")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, file, text, want string
	}{
		{"a template that does not parse", "request.html", `{{define "content"}}{{.Extra.CSRF{{end}}`, "template: request.html:1: "},
		{"a misspelt field", "access.html", `{{define "content"}}{{.Extra.Grnats}}{{end}}`, `access.html:1:28: executing "content" at <.Extra.Grnats>: can't evaluate field Grnats`},
		{"a layout without the page", "layout.html", `{{define "other"}}{{end}}`, `layout.html: defines no "page" template`},
		{"a stylesheet that closes its element", "style.css", "p{}</style><script>", `style.css: must not contain "</"`},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, c.file), []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		h := validHandler()
		h.PagesDir = dir
		err := tryProvision(h)
		if err == nil || !strings.Contains(err.Error(), "gatehouse: pages_dir "+dir+": ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
	}
	for _, c := range []struct {
		name string
		set  func(h *Handler)
		want string
	}{
		{"pages_dir is a file", func(h *Handler) { h.PagesDir = file }, "gatehouse: pages_dir: " + file + " is not a directory"},
		{"pages_dir is missing", func(h *Handler) { h.PagesDir = file + ".d" }, "gatehouse: pages_dir: stat " + file + ".d: no such file or directory"},
		{"a support contact on two lines", func(h *Handler) { h.SupportContact = "IT\nhelpdesk" }, `gatehouse: support_contact: "IT\nhelpdesk" must be one line`},
	} {
		h := validHandler()
		c.set(h)
		if err := tryProvision(h); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
	}
}
