package module

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net/http"
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

// answer is one of Gatehouse's own responses.
type answer struct {
	Status   int    `json:"-"`
	Error    string `json:"error"`            // class: unauthenticated, forbidden, bad_request…
	Reason   string `json:"reason,omitempty"` // stable reason code
	Message  string `json:"message"`          // for people; never internals
	Note     string `json:"note,omitempty"`   // a second line for people
	LoginURL string `json:"login_url,omitempty"`
	// StepUpURL starts the step-up a 401 asks for; Requirement names it.
	StepUpURL   string      `json:"step_up_url,omitempty"`
	Requirement *stepUpJSON `json:"requirement,omitempty"`
	Reference   string      `json:"decision_id,omitempty"`
	Title       string      `json:"-"`
	ActionURL   string      `json:"-"`
	ActionText  string      `json:"-"`
}

type pageData struct {
	answer
	App    string
	User   string
	Style  template.CSS
	Notice string
	Extra  any // the page's own data
}

// write sends a as a page when html is true, else as JSON.
func (p *pages) write(w http.ResponseWriter, html bool, a answer, app, user string) {
	p.render(w, html, "message", pageData{answer: a, App: app, User: user}, a)
}

// render sends a page (or, when html is false, jsonBody as JSON) with
// a.Status.
func (p *pages) render(w http.ResponseWriter, html bool, name string, data pageData, jsonBody any) {
	a := data.answer
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: browsers send "Origin: null" on form
	// posts from a no-referrer page, and forms check the Origin.
	h.Set("Referrer-Policy", "same-origin")
	if !html {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(a.Status)
		_ = json.NewEncoder(w).Encode(jsonBody)
		return
	}
	var buf bytes.Buffer
	if data.Title == "" {
		data.Title = http.StatusText(a.Status)
	}
	data.Style = p.style
	if err := p.tmpl[name].ExecuteTemplate(&buf, "page", data); err != nil {
		http.Error(w, a.Message, a.Status)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(a.Status)
	_, _ = w.Write(buf.Bytes())
}
