package module

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

const scimToken = "scim-0123456789abcdef0123456789abcdef"

// TestSCIMConfigRefused: a scim block that cannot keep leavers out does
// not start.
func TestSCIMConfigRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		scim *SCIM
		grnt string
		want string
	}{
		{"no token", &SCIM{}, "file:///tmp/x.db", "gatehouse: scim: token is required"},
		{"a short token", &SCIM{Tokens: []string{"short"}}, "file:///tmp/x.db", "gatehouse: scim token: a SCIM token needs at least 32 characters"},
		{"a token with a space", &SCIM{Tokens: []string{scimToken + " x"}}, "file:///tmp/x.db", "gatehouse: scim token: a SCIM token cannot hold spaces"},
		{"an unset token", &SCIM{Tokens: []string{"{env.GATEHOUSE_TEST_UNSET_SCIM}"}}, "file:///tmp/x.db",
			"gatehouse: a placeholder resolved to nothing: scim token {env.GATEHOUSE_TEST_UNSET_SCIM} (set GATEHOUSE_TEST_UNSET_SCIM)"},
		{"a bad link", &SCIM{Tokens: []string{scimToken}, Link: "upn"}, "file:///tmp/x.db", `gatehouse: scim link: must be email or sub, got "upn"`},
		{"the memory store", &SCIM{Tokens: []string{scimToken}}, "", "gatehouse: scim: needs a grants store that keeps its data"},
		{"memory:", &SCIM{Tokens: []string{scimToken}}, "memory:", "gatehouse: scim: needs a grants store that keeps its data"},
	} {
		h := validHandler()
		h.SCIM, h.Grants = c.scim, c.grnt
		if err := tryProvision(h); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant %q", c.name, err, c.want)
		}
	}
}

// TestSCIMServed: the module serves the gate's SCIM answers as they are
// (status, application/scim+json, Location, WWW-Authenticate), writes
// their audit lines, and never logs the token.
func TestSCIMServed(t *testing.T) {
	t.Setenv("GATEHOUSE_TEST_SCIM", scimToken)
	h := validHandler()
	h.Grants = "file://" + filepath.Join(t.TempDir(), "grants.db")
	h.SCIM = &SCIM{Tokens: []string{"{env.GATEHOUSE_TEST_SCIM}"}}
	h, logs := provision(t, h)
	if h.SCIM.Link != "email" || h.SCIM.Tokens[0] != scimToken {
		t.Errorf("scim after provision: %+v", h.SCIM)
	}
	post := func(auth string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "https://app.example.com/.gatehouse/scim/v2/Users",
			strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@example.com","active":false}`))
		r.Header.Set("Content-Type", "application/scim+json")
		r.Header.Set("Authorization", auth)
		w, next := serve(h, r)
		if next != nil {
			t.Error("a SCIM request reached the upstream")
		}
		return w
	}
	w := post("Bearer " + scimToken)
	if w.Code != http.StatusCreated || w.Header().Get("Content-Type") != "application/scim+json" ||
		!strings.HasPrefix(w.Header().Get("Location"), "https://app.example.com/.gatehouse/scim/v2/Users/") || len(w.Result().Cookies()) != 0 {
		t.Errorf("POST: %d %v %s", w.Code, w.Header(), w.Body)
	}
	w = post("Bearer " + strings.ToUpper(scimToken))
	if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" || !strings.Contains(w.Body.String(), `"status":"401"`) {
		t.Errorf("a wrong token: %d %v %s", w.Code, w.Header(), w.Body)
	}
	var created, decided, refused bool
	for _, e := range logs.All() {
		m := e.ContextMap()
		created = created || e.Message == "scim user created" && m["user_name"] == "alice@example.com" && m["active"] == false
		decided = decided || e.Message == "decision" && m["reason"] == "scim_created" && m["result"] == "internal"
		refused = refused || e.Message == "decision" && m["reason"] == "scim_unauthorized" && m["result"] == "deny"
		for _, f := range e.Context {
			if strings.Contains(strings.ToLower(f.String), strings.ToLower(scimToken)) {
				t.Errorf("the log line %q holds the token", e.Message)
			}
		}
	}
	if !created || !decided || !refused {
		t.Errorf("audit lines: created %v, decided %v, refused %v", created, decided, refused)
	}
}
