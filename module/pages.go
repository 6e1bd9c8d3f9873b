package module

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net/http"

	"github.com/gatehouse-proxy/gatehouse/gate"
)

//go:embed pages
var pageFiles embed.FS

// pages renders Gatehouse's own answers: an HTML page for navigations,
// JSON for everything else. Pages use no external assets and no script;
// the stylesheet is inline and allowed by its hash in the CSP.
type pages struct {
	tmpl  map[string]*template.Template // page name → layout with its content
	style template.CSS
	csp   string
}

// pageNames are the pages with content of their own; "message" is the
// layout's default content.
var pageNames = []string{"request", "access", "approvals"}

func newPages() (*pages, error) {
	layout, err := template.ParseFS(pageFiles, "pages/layout.html")
	if err != nil {
		return nil, err
	}
	p := &pages{tmpl: map[string]*template.Template{"message": layout}}
	for _, name := range pageNames {
		t, err := template.Must(layout.Clone()).ParseFS(pageFiles, "pages/"+name+".html")
		if err != nil {
			return nil, err
		}
		p.tmpl[name] = t
	}
	css, err := pageFiles.ReadFile("pages/style.css")
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(css)
	p.style = template.CSS(css)
	p.csp = "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	return p, nil
}

// pageData is what a page template reads: the answer's fields, the app's
// name, the inline stylesheet and the page's own data (Extra).
type pageData struct {
	*gate.Answer
	App   string
	Style template.CSS
	Extra any
}

// render sends a with status: as the page it names ("message" by
// default) when html is true, else as JSON (a.JSON when set, else a).
func (p *pages) render(w http.ResponseWriter, html bool, status int, app string, a *gate.Answer) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: browsers send "Origin: null" on form
	// posts from a no-referrer page, and forms check the Origin.
	h.Set("Referrer-Policy", "same-origin")
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
	data := pageData{Answer: a, App: app, Style: p.style, Extra: a.Data}
	if a.Title == "" {
		cp := *a
		cp.Title = http.StatusText(status)
		data.Answer = &cp
	}
	name := a.Page
	if name == "" {
		name = "message"
	}
	var buf bytes.Buffer
	if err := p.tmpl[name].ExecuteTemplate(&buf, "page", data); err != nil {
		http.Error(w, a.Message, status)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // the client may have gone: nothing to do
}
