package gate

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// TestPagesNameTheSignedInUser: every answer of a signed-in user names
// them (their name, else their verified email, never their subject) and
// says they are signed in, so that the page offers "My access" and
// "Sign out"; answers to anyone else name nobody.
func TestPagesNameTheSignedInUser(t *testing.T) {
	tg := policyGate(t, nil)
	const uuid = "5f0c2c8e-6a41-4a7e-9d8b-3c1e2f7a9b10"
	named := tg.session()
	named.Subject, named.Name = uuid, "Alice Employee"
	emailOnly := tg.session()
	emailOnly.Subject = uuid
	// An unverified email never reaches the session: nothing to name.
	anonymous := tg.session()
	anonymous.Subject, anonymous.Email = uuid, ""
	approver := tg.session()
	approver.Subject, approver.Name, approver.Groups = uuid, "Carol \u202eManager", []string{"approvers"}

	for _, c := range []struct {
		name string
		s    *authn.Session
		path string
		user string
	}{
		{"deny, by name", named, "/", "Alice Employee"},
		{"deny, by email", emailOnly, "/", "alice@example.com"},
		{"deny, neither", anonymous, "/", ""},
		{"deny with the request form", named, "/grant", "Alice Employee"},
		{"step-up 401", named, "/stepup", "Alice Employee"},
		{"policy error", anonymous, "/undeclared", ""},
		{"my access", named, "/.gatehouse/access", "Alice Employee"},
		{"approvals, a bidi override cleaned", approver, "/.gatehouse/approvals", "Carol  Manager"},
		{"an unknown endpoint", emailOnly, "/.gatehouse/nothing", ""},
	} {
		out := tg.handle(request(http.MethodGet, c.path, false, tg.cookie(t, c.s)))
		a := out.Answer
		if c.name == "an unknown endpoint" {
			// Endpoints answered before the session is read name nobody.
			if a == nil || a.SignedIn || a.User != "" {
				t.Errorf("%s: answer %+v", c.name, a)
			}
			continue
		}
		if a == nil || !a.SignedIn || a.User != c.user {
			t.Errorf("%s: signed in %v as %q, want %q (answer %+v)", c.name, a != nil && a.SignedIn, a.User, c.user, a)
			continue
		}
		for _, text := range []string{a.User, a.Title, a.Message, a.Note, a.Notice} {
			if strings.Contains(text, uuid) {
				t.Errorf("%s: the subject is shown: %q", c.name, text)
			}
		}
	}

	// Nobody signed in: no identity, whatever the page.
	for _, r := range []*http.Request{
		request(http.MethodGet, "/x", false),
		request(http.MethodGet, "/.gatehouse/access", false),
		request(http.MethodGet, "/a;b", false, tg.cookie(t, named)),
	} {
		if a := tg.handle(r).Answer; a == nil || a.SignedIn || a.User != "" {
			t.Errorf("%s: answer %+v", r.URL, a)
		}
	}
	// A revoked session is nobody's.
	tg.cfg.Grants.NoteSessionRevoked(tg.user(emailOnly), emailOnly.ID, tg.clock.now().Add(time.Hour))
	if a := tg.handle(request(http.MethodGet, "/", false, tg.cookie(t, emailOnly))).Answer; a == nil || a.SignedIn || a.User != "" {
		t.Errorf("revoked: answer %+v", a)
	}
}

// TestSignedOutPageNamesNobody: the page after sign-out shows no one,
// though the request carried the session it ended.
func TestSignedOutPageNamesNobody(t *testing.T) {
	tg := newTestGate(t, nil)
	tg.idp.noEndSession = true // the page is the logout's own answer
	s := tg.session()
	s.Name = "Alice Employee"
	out := tg.handle(request(http.MethodPost, "/.gatehouse/logout", true, tg.cookie(t, s)))
	want(t, "signed out", out, Page, http.StatusOK, ResultLogout, ReasonLoggedOut)
	if a := out.Answer; a == nil || a.SignedIn || a.User != "" || a.Title != "Signed out" {
		t.Errorf("signed-out page %+v", a)
	}
}

// TestBackToTheApp: a refused request form goes back to the page it was
// offered on; other pages go back to the app's home ("").
func TestBackToTheApp(t *testing.T) {
	tg := policyGate(t, nil)
	c := tg.cookie(t, tg.session())
	deny := tg.handle(request(http.MethodGet, "/grant?tab=2", false, c))
	if deny.Answer == nil || deny.Answer.Return != "" {
		t.Fatalf("deny: %+v", deny.Answer)
	}
	offer := deny.Answer.JSON.(struct {
		*Answer
		RequestGrant map[string]string `json:"request_grant"`
	}).RequestGrant
	out := tg.handle(form("/.gatehouse/request", url.Values{"csrf": {offer["csrf"]}, "offer": {offer["offer"]}, "reason": {""}, "duration": {"30m"}}, c))
	want(t, "no reason", out, Deny, http.StatusBadRequest, ResultDeny, ReasonReasonMissing)
	if out.Answer.Return != "/grant?tab=2" || !out.Answer.SignedIn {
		t.Errorf("back from a refused request: %+v", out.Answer)
	}
}

// jargon are words a worker should not have to read on a page: the
// reason codes and JSON fields keep them, the sentences do not.
var jargon = regexp.MustCompile(`(?i)\b(polic(y|ies)|grants?|acr|amr|idp|identity provider|sessions?|gatehouse|oidc|token|urn:)\b`)

// TestPlainWords: what users read (titles, messages, notes, notices,
// buttons) is free of jargon, across the answers Gatehouse gives.
func TestPlainWords(t *testing.T) {
	type said struct{ where, text string }
	var texts []said
	add := func(where string, a *Answer) {
		if a == nil {
			t.Errorf("%s: no answer", where)
			return
		}
		for _, text := range []string{a.Title, a.Message, a.Note, a.Notice, a.ActionText} {
			texts = append(texts, said{where, text})
		}
	}
	tg := policyGate(t, func(c *Config) {
		c.AllowGroups = []string{"staff", "approvers"}
		c.ApprovalStepUp = &authn.Requirement{ACR: []string{"urn:mfa"}}
	})
	s := tg.session()
	c := tg.cookie(t, s)
	outsider := tg.session()
	outsider.Groups = nil
	for _, r := range []*http.Request{
		request(http.MethodGet, "/x", false),
		request(http.MethodGet, "/", false, c),
		request(http.MethodGet, "/grant", false, c),
		request(http.MethodGet, "/stepup", false, c),
		request(http.MethodGet, "/undeclared", false, c),
		request(http.MethodGet, "/x", false, tg.cookie(t, outsider)),
		request(http.MethodGet, "/.gatehouse/approvals", false, c),
		request(http.MethodGet, "/.gatehouse/access", false, c),
		request(http.MethodGet, "/a;b", false),
		form("/.gatehouse/request", url.Values{"offer": {"x"}}, c),
		form("/.gatehouse/access", url.Values{"csrf": {tg.csrf.Token(s.ID)}, "grant": {"nope"}, "action": {"end"}}, c),
	} {
		add(r.URL.Path, tg.handle(r).Answer)
	}
	noPolicy := newTestGate(t, nil)
	add("approvals without a policy", noPolicy.handle(request(http.MethodGet, "/.gatehouse/approvals", false, noPolicy.cookie(t, noPolicy.session()))).Answer)
	down := newTestGate(t, func(c *Config) {
		c.Issuer = "https://idp.invalid"
		c.IdP.Discovery = authn.NewDiscovery(c.Issuer, &http.Client{Timeout: time.Second})
	})
	add("IdP down", down.handle(request(http.MethodGet, "/x", true)).Answer)
	start := tg.handle(request(http.MethodGet, "/x", true))
	u, _ := url.Parse(start.Location)
	state := url.QueryEscape(u.Query().Get("state"))
	for _, q := range []string{"?code=x", "?state=" + state + "&code=x&iss=https%3A%2F%2Fevil.example", "?state=" + state + "&error=access_denied",
		"?state=" + state, "?state=" + state + "&code=nope"} {
		add("callback"+q, tg.handle(request(http.MethodGet, "/.gatehouse/callback"+q, true, start.Cookies...)).Answer)
	}
	for _, reason := range []string{"state_expired", "code_rejected", "no_id_token", "nonce_mismatch", "azp_mismatch", "not_reauthenticated",
		"auth_time_too_old", "weaker_acr", "missing_amr", "stale_auth_time", "something_new"} {
		texts = append(texts, said{reason, loginWords(&authn.LoginError{Reason: reason, Msg: "The ID token's acr is wrong."})})
	}
	for _, need := range []authn.Requirement{{ACR: []string{"urn:mfa"}}, {AMR: []string{"hwk"}}, {MaxAge: 5 * time.Minute}, {Provider: "eid"}, {}} {
		texts = append(texts, said{"step-up " + need.String(), stepUpWords(need)})
	}
	for k, v := range notices {
		texts = append(texts, said{"notice " + k, v})
	}
	for _, s := range texts {
		if m := jargon.FindString(s.text); m != "" {
			t.Errorf("%s: %q says %q", s.where, s.text, m)
		}
	}
}

// TestFirstSignInAsksForTheStepUp: a sign-in for a page whose step-up is
// known before any policy runs (a step_up rule matching its path, the
// approvals page's approval_step_up) asks the IdP for it at once, so the
// user signs in once; one known only from a policy's decision, or a
// step-out to another provider, is not asked up front.
func TestFirstSignInAsksForTheStepUp(t *testing.T) {
	mfa := authn.Requirement{ACR: []string{"urn:mfa"}, MaxAge: 5 * time.Minute}
	eid := newTestIdP(t)
	tg := policyGate(t, func(c *Config) {
		c.ApprovalStepUp = &authn.Requirement{ACR: []string{"urn:mfa", "urn:hwk"}, MaxAge: 10 * time.Minute}
		c.Providers = map[string]*Provider{"eid": {Issuer: eid.URL, ClientID: "gh", LinkClaim: "email",
			IdP: IdP{Discovery: authn.NewDiscovery(eid.URL, eid.Client()), Used: authn.NewUsedStates()}}}
		c.StepUp = authn.StepUpRules{
			{Paths: globPaths{"/admin/*"}, Requirement: mfa},
			{Paths: globPaths{"/tax/*"}, Requirement: authn.Requirement{Provider: "eid", ACR: []string{"eidas-high"}}},
		}
	})
	for _, c := range []struct {
		target, acr, maxAge, prompt string
	}{
		{"/.gatehouse/approvals", "urn:hwk urn:mfa", "600", "login"},
		{"/admin/x?y=1", "urn:mfa", "300", "login"},
		{"/.gatehouse/login?rd=%2Fadmin%2Fx", "urn:mfa", "300", "login"},
		{"/.gatehouse/stepup?rd=%2FADMIN%2Fx", "urn:mfa", "300", "login"},
		{"/x", "", "43200", ""},
		{"/stepup", "", "43200", ""}, // the policy's obligation: known after the sign-in
		{"/tax/return", "", "43200", ""},
	} {
		out := tg.handle(request(http.MethodGet, c.target, true))
		if out.Kind != Login || !strings.HasPrefix(out.Location, tg.idp.URL+"/auth?") {
			t.Errorf("%s: %s %q, want a sign-in", c.target, out.Kind, out.Location)
			continue
		}
		u, _ := url.Parse(out.Location)
		q := u.Query()
		if q.Get("acr_values") != c.acr || q.Get("max_age") != c.maxAge || q.Get("prompt") != c.prompt {
			t.Errorf("%s: acr_values %q, max_age %q, prompt %q; want %q, %q, %q", c.target, q.Get("acr_values"), q.Get("max_age"), q.Get("prompt"), c.acr, c.maxAge, c.prompt)
		}
	}

	// The approver signs in once and sees the approvals page.
	s := map[string]any{"acr": "urn:mfa", "groups": []string{"approvers"}}
	out, jar := tg.signIn(t, "/.gatehouse/approvals", s)
	want(t, "the sign-in", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	page := tg.handle(request(http.MethodGet, out.Location, true, jar...))
	want(t, "the approvals page after one sign-in", page, Page, http.StatusOK, ResultInternal, ReasonApprovals)
	// An IdP that ignored acr_values: the page asks for the step-up.
	out, jar = tg.signIn(t, "/.gatehouse/approvals", map[string]any{"acr": "urn:pwd"})
	want(t, "a weaker sign-in", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	want(t, "then the step-up", tg.handle(request(http.MethodGet, out.Location, true, jar...)), StepUp, http.StatusFound, ResultStepUp, ReasonStepUpACR)
}
