package module

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/gatehouse-proxy/gatehouse/gate"
)

//go:embed pages
var embeddedPages embed.FS

// pages renders Gatehouse's own answers: an HTML page for navigations,
// JSON for everything else. Pages use no external assets and no script;
// the stylesheet is inline and allowed by its hash in the CSP. Any of
// pageFiles found in pages_dir replaces the embedded one.
type pages struct {
	tmpl    map[string]*template.Template // page name → layout with its content
	style   template.CSS
	csp     string
	app     string // the app's name, for "Back to <app>"
	support string // support_contact, on error answers
}

// pageFiles are the files of the page templates, each of which pages_dir
// may replace. layout.html defines "page" (the whole document) and the
// default "content" (the message page); each of the others redefines
// "content" for the page of its name.
var pageFiles = []string{"layout.html", "request.html", "access.html", "approvals.html", "resubmit.html", "signin.html", "reviews.html", "style.css"}

// pageNames are the pages with content of their own; "message" is the
// layout's default content.
var pageNames = []string{"request", "access", "approvals", "resubmit", "signin", "reviews"}

// pageOptions are what the pages are made of.
type pageOptions struct {
	Dir     string // pages_dir; "" uses the embedded files only
	App     string
	Support string
	// FormOrigins may receive the pages' forms besides the site itself:
	// the IdPs, where a form's answer may redirect (sign-out ends the
	// IdP's session; a form posted after the session ended signs in).
	// Browsers apply the CSP's form-action to those redirects too.
	FormOrigins []string
}

func newPages(opt pageOptions) (*pages, error) {
	src := map[string][]byte{}
	for _, name := range pageFiles {
		b, err := readPageFile(opt.Dir, name)
		if err != nil {
			return nil, err
		}
		src[name] = b
	}
	bad := func(name string, err error) error {
		if opt.Dir != "" {
			return fmt.Errorf("gatehouse: pages_dir %s: %w", opt.Dir, err)
		}
		return fmt.Errorf("gatehouse: embedded page %s: %w", name, err)
	}
	layout, err := template.New("layout.html").Parse(string(src["layout.html"]))
	if err != nil {
		return nil, bad("layout.html", err)
	}
	if layout.Lookup("page") == nil {
		return nil, bad("layout.html", errors.New(`layout.html: defines no "page" template (the whole document)`))
	}
	p := &pages{tmpl: map[string]*template.Template{}, app: opt.App, support: opt.Support}
	for _, name := range pageNames {
		clone, err := layout.Clone()
		if err != nil {
			return nil, bad(name+".html", err)
		}
		if p.tmpl[name], err = clone.New(name + ".html").Parse(string(src[name+".html"])); err != nil {
			return nil, bad(name+".html", err)
		}
	}
	p.tmpl["message"] = layout
	css := src["style.css"]
	if bytes.Contains(css, []byte("</")) {
		// It is inlined in a <style> element, which "</" could close.
		return nil, bad("style.css", errors.New("style.css: must not contain \"</\""))
	}
	sum := sha256.Sum256(css)
	p.style = template.CSS(css)
	p.csp = "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; form-action " + strings.Join(append([]string{"'self'"}, opt.FormOrigins...), " ") +
		"; frame-ancestors 'none'; base-uri 'none'"
	// A template that parses may still fail on the data (a misspelt
	// field): try each page once now, not in front of a user.
	for name, t := range p.tmpl {
		if err := t.ExecuteTemplate(io.Discard, "page", samplePage(p, name)); err != nil {
			return nil, bad(t.Name(), err)
		}
	}
	return p, nil
}

// readPageFile is name from dir when it is there, else the embedded one.
func readPageFile(dir, name string) ([]byte, error) {
	if dir != "" {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("gatehouse: pages_dir: %w", err)
		}
	}
	return embeddedPages.ReadFile("pages/" + name)
}

// samplePage is page data with every field set, to try a page on.
func samplePage(p *pages, name string) pageData {
	a := &gate.Answer{Error: "forbidden", Reason: "policy_deny", Title: "Title", Message: "Message", Note: "Note",
		Reference: "0123456789abcdef", Support: "Support", ActionURL: "/", ActionText: "Action", Page: name,
		SignedIn: true, User: "User", Return: "/", Notice: "Notice"}
	var extra any
	switch name {
	case "request":
		extra = gate.RequestForm{CSRF: "c", Offer: "o", Resource: "r", MaxDuration: "1 hour",
			Durations: []gate.DurationChoice{{Value: "1h0m0s", Label: "1 hour"}}}
	case "signin":
		extra = &gate.SignInPage{Return: "/", IdPs: []gate.IdPChoice{{Name: "corp", Label: "Corp", URL: "/.gatehouse/login?idp=corp&rd=%2F"}},
			ByEmail: true, Typed: "a@example.com"}
	case "access", "approvals":
		extra = gate.AccessPage{CSRF: "c", Grants: []gate.GrantView{{ID: "g", Resource: "r"}},
			Requests: []gate.RequestView{{ID: "q", Resource: "r"}}}
	case "reviews":
		extra = gate.ReviewsPage{CSRF: "c", GroupsNote: "n", Campaigns: []gate.CampaignView{{ID: "c", Review: "r", Period: "p", Ends: "e",
			OnTimeout: "o", Unused: 1, Items: []gate.ReviewItemView{{ID: "i", Who: "w", Resource: "r", Source: "s", LastUsed: "never", Unused: true},
				{ID: "j", Decided: "kept by x"}}}}}
	case "resubmit":
		extra = gate.ResubmitForm{Action: "/a?b=c", Enctype: gate.EnctypeMultipart, Files: 1,
			Fields: []gate.FormField{{Name: "n", Value: "v"}, {Name: "f", Value: "a.pdf", File: true, Chosen: true}}}
	}
	a.Data = extra
	return p.data(a, 403)
}

// pageData is what a page template reads (docs/pages.md): the answer's
// fields, the app's name, where "Back to <app>" goes, the inline
// stylesheet and the page's own data (Extra).
type pageData struct {
	*gate.Answer
	App   string
	Back  string
	Style template.CSS
	Extra any
}

func (p *pages) data(a *gate.Answer, status int) pageData {
	d := pageData{Answer: a, App: p.app, Back: a.Return, Style: p.style, Extra: a.Data}
	if d.Back == "" {
		d.Back = "/"
	}
	if a.Title == "" {
		cp := *a
		cp.Title = http.StatusText(status)
		d.Answer = &cp
	}
	return d
}

// render sends a with status: as the page it names ("message" by
// default) when html is true, else as JSON (a.JSON when set, else a).
// Error answers (4xx, 5xx) name the support contact.
func (p *pages) render(w http.ResponseWriter, html bool, status int, a *gate.Answer) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: browsers send "Origin: null" on form
	// posts from a no-referrer page, and forms check the Origin.
	h.Set("Referrer-Policy", "same-origin")
	if status >= 400 {
		a.Support = p.support // a.JSON may embed a
	}
	if !html {
		var body any = a
		if a.JSON != nil {
			body = a.JSON
		}
		h.Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body) // the client may have gone: nothing to do
		return
	}
	name := a.Page
	if p.tmpl[name] == nil {
		name = "message"
	}
	var buf bytes.Buffer
	if err := p.tmpl[name].ExecuteTemplate(&buf, "page", p.data(a, status)); err != nil {
		http.Error(w, a.Message, status)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // the client may have gone: nothing to do
}
