package module

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// twoIdPHandler is the payroll site with the staff's IdP and a
// partner's.
func twoIdPHandler() *Handler {
	h := validHandler()
	h.Issuer, h.ClientID = "", ""
	h.IdPs = []*IdP{
		{Name: "corp", Label: "Example staff", Issuer: "https://login.example.com/realms/staff", ClientID: "payroll", Domains: []string{"example.com"}},
		{Name: "partner", Label: "Partner <Ltd> staff", Issuer: "https://sso.partner.example", ClientID: "example-payroll", Domains: []string{"partner.example"}},
	}
	return h
}

func TestIdPsRefusedConfig(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(h *Handler)
		want   string
	}{
		{"with the top-level issuer", func(h *Handler) { h.Issuer = "https://login.example.com" }, "gatehouse: idp: the top-level issuer, client_id"},
		{"with top-level scopes", func(h *Handler) { h.Scopes = []string{"openid"} }, "gatehouse: idp: the top-level issuer, client_id"},
		{"a name twice", func(h *Handler) { h.IdPs[1].Name = "corp" }, "gatehouse: idp: corp is defined twice"},
		{"a provider's name", func(h *Handler) {
			h.Providers = map[string]*Provider{"partner": {Issuer: "https://eid.example", ClientID: "x", LinkClaim: "email"}}
		}, "gatehouse: idp: partner is also the name of a provider"},
		{"a bad name", func(h *Handler) { h.IdPs[1].Name = "part ner" }, `gatehouse: idp: name "part ner" must be`},
		{"an issuer twice", func(h *Handler) { h.IdPs[1].Issuer = h.IdPs[0].Issuer }, "gatehouse: idp: corp and partner have the same issuer"},
		{"a domain twice", func(h *Handler) { h.IdPs[1].Domains = []string{"partner.example", "EXAMPLE.com"} },
			"gatehouse: idp: the domain example.com is given to corp and to partner"},
		{"a bad domain", func(h *Handler) { h.IdPs[1].Domains = []string{"*.partner.example"} }, `gatehouse: idp: partner: domains: "*.partner.example" is not a domain name`},
		{"no issuer", func(h *Handler) { h.IdPs[1].Issuer = "" }, "gatehouse: idp: partner: issuer is required"},
		{"an http issuer", func(h *Handler) { h.IdPs[1].Issuer = "http://sso.partner.example" }, `gatehouse: idp: partner: issuer: "http://sso.partner.example" must use https`},
		{"no client", func(h *Handler) { h.IdPs[1].ClientID = "" }, "gatehouse: idp: partner: client_id is required"},
		{"scopes without openid", func(h *Handler) { h.IdPs[1].Scopes = []string{"email"} }, "gatehouse: idp: partner: scopes must include openid"},
		{"a label of two lines", func(h *Handler) { h.IdPs[1].Label = "Partner\nstaff" }, `gatehouse: idp: label "Partner\nstaff" must be one line`},
		{"no configuration", func(h *Handler) { h.IdPs = append(h.IdPs, nil) }, "gatehouse: idp: #3: no configuration"},
		{"an unset secret", func(h *Handler) { h.IdPs[1].ClientSecret = "{env.GATEHOUSE_TEST_UNSET_VAR}" },
			"gatehouse: a placeholder resolved to nothing: idp partner client_secret {env.GATEHOUSE_TEST_UNSET_VAR} (set GATEHOUSE_TEST_UNSET_VAR)"},
	} {
		h := twoIdPHandler()
		c.change(h)
		if err := tryProvision(h); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v\nwant it to contain %q", c.name, err, c.want)
		}
	}
}

// TestIdPsSignInPage: with two IdPs the handler provisions offline,
// sends a browser without a session to the sign-in page, and renders it
// without script, in the pages' CSP, whose form-action lets its forms
// continue to either IdP; the page names no issuer.
func TestIdPsSignInPage(t *testing.T) {
	h, _ := provision(t, twoIdPHandler())
	if h.Scopes != nil || h.IdPs[1].Scopes == nil || h.IdPs[1].GroupsClaim != "groups" {
		t.Errorf("defaults: top-level scopes %v, partner's %v %q", h.Scopes, h.IdPs[1].Scopes, h.IdPs[1].GroupsClaim)
	}
	nav := func(target string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "https://payroll.example.com"+target, nil)
		r.Header.Set("Sec-Fetch-Mode", "navigate")
		r.Header.Set("Sec-Fetch-Dest", "document")
		r.Header.Set("Accept", "text/html")
		return r
	}
	w, _ := serve(h, nav("/reports"))
	if w.Code != http.StatusFound || w.Header().Get("Location") != "/.gatehouse/login?rd=%2Freports" {
		t.Fatalf("navigation: %d %q", w.Code, w.Header().Get("Location"))
	}
	w, _ = serve(h, nav("/.gatehouse/login?rd=%2Freports"))
	body := w.Body.String()
	if w.Code != http.StatusOK {
		t.Fatalf("sign-in page: %d\n%s", w.Code, body)
	}
	for _, s := range []string{`<form method="get" action="/.gatehouse/login">`, `<input type="hidden" name="rd" value="/reports">`,
		`<button type="submit" name="idp" value="corp">Example staff</button>`,
		`<button type="submit" name="idp" value="partner">Partner &lt;Ltd&gt; staff</button>`,
		`<input id="login_hint" name="login_hint" type="email"`, `<label for="login_hint">`} {
		if !strings.Contains(body, s) {
			t.Errorf("sign-in page lacks %s:\n%s", s, body)
		}
	}
	for _, s := range []string{"<script", "login.example.com", "sso.partner.example", "partner.example\"", "Sign out"} {
		if strings.Contains(body, s) {
			t.Errorf("sign-in page has %s:\n%s", s, body)
		}
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' https://login.example.com https://sso.partner.example;") {
		t.Errorf("CSP %q", csp)
	}

	// What the user typed is shown again, escaped.
	w, _ = serve(h, nav(`/.gatehouse/login?login_hint=%22%3E%3Cb%3Ex%40unknown.example`))
	if body := w.Body.String(); w.Code != http.StatusBadRequest || strings.Contains(body, "<b>") || !strings.Contains(body, `value="&#34;&gt;&lt;b&gt;x@unknown.example"`) {
		t.Errorf("typed email: %d\n%s", w.Code, body)
	}

	// A session made under the one-IdP settings of the same issuer and
	// client opens as that IdP's once it is an idp block.
	h2 := validHandler()
	h2.Issuer, h2.ClientID = h.IdPs[0].Issuer, h.IdPs[0].ClientID
	now := time.Now()
	c := sessionCookie(t, h2, &authn.Session{ID: "s", Subject: "alice", Email: "alice@example.com", Created: now.Unix(), LastSeen: now.Unix()})
	r := httptest.NewRequest(http.MethodGet, "https://payroll.example.com/x", nil)
	r.AddCookie(c)
	if w, got := serve(h, r); got == nil || got.Header.Get("X-Remote-User") != "alice@example.com" {
		t.Errorf("a session of before: %d %s", w.Code, w.Body)
	}
}
