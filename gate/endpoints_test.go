package gate

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

func TestHealthzAndJWKS(t *testing.T) {
	tg := newTestGate(t, nil)
	out := tg.handle(request(http.MethodGet, "/.gatehouse/healthz", false))
	want(t, "healthz", out, Page, http.StatusOK, ResultInternal, ReasonHealthz)
	if string(out.Body) != `{"status":"ok"}`+"\n" || out.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("healthz %q %v", out.Body, out.Header)
	}
	if out := tg.handle(request(http.MethodHead, "/.gatehouse/healthz", false)); out.Status != http.StatusOK || out.Body != nil {
		t.Errorf("HEAD healthz: %d %q", out.Status, out.Body)
	}
	out = tg.handle(request(http.MethodPost, "/.gatehouse/healthz", false))
	want(t, "POST healthz", out, BadRequest, http.StatusMethodNotAllowed, ResultInternal, ReasonMethodNotAllowed)
	if out.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("Allow %q", out.Header.Get("Allow"))
	}
	for _, m := range []string{"GE", "T", "get", "PUT"} {
		if out := tg.handle(request(m, "/.gatehouse/healthz", false)); out.Status != http.StatusMethodNotAllowed {
			t.Errorf("method %q: %d", m, out.Status)
		}
	}
	want(t, "unknown endpoint", tg.handle(request(http.MethodGet, "/.gatehouse/nothing", false)), BadRequest, http.StatusNotFound, ResultInternal, ReasonNotFound)
	want(t, "endpoints are matched on the canonical path", tg.handle(request(http.MethodGet, "/x/../.GATEHOUSE//healthz", false)),
		Page, http.StatusOK, ResultInternal, ReasonHealthz)

	out = tg.handle(request(http.MethodGet, "/.gatehouse/jwks.json", false))
	want(t, "jwks without an assertion", out, Page, http.StatusOK, ResultInternal, ReasonJWKS)
	if string(out.Body) != `{"keys":[]}` || out.Header.Get("Content-Type") != "application/jwk-set+json" {
		t.Errorf("jwks %q %v", out.Body, out.Header)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys := authn.NewPublishedKeys()
	asserter, err := authn.NewAsserter(authn.AssertionConfig{Issuer: "https://app.example.com", Audience: "payroll", Keys: []*ecdsa.PrivateKey{key},
		Claims: []string{"sub"}, TTL: time.Minute}, keys)
	if err != nil {
		t.Fatal(err)
	}
	signed := newTestGate(t, func(c *Config) { c.Asserter, c.AssertionHeader, c.PublishedKeys = asserter, "X-Assertion", keys })
	var set struct{ Keys []map[string]any }
	if err := json.Unmarshal(signed.handle(request(http.MethodGet, "/.gatehouse/jwks.json", false)).Body, &set); err != nil || len(set.Keys) != 1 || set.Keys[0]["alg"] != "ES256" {
		t.Errorf("jwks with a key: %+v %v", set, err)
	}
	out = signed.handle(request(http.MethodGet, "/x", false, signed.cookie(t, signed.session())))
	if v, _ := out.upstream("X-Assertion"); strings.Count(v, ".") != 2 {
		t.Errorf("assertion header %q", v)
	}
}

// signIn runs a whole sign-in: a navigation to target, the IdP's answer
// for claims, and the callback. It returns the callback's outcome and the
// cookies the browser then holds.
func (tg *testGate) signIn(t *testing.T, target string, claims map[string]any, cookies ...*http.Cookie) (Outcome, []*http.Cookie) {
	t.Helper()
	start := tg.handle(request(http.MethodGet, target, true, cookies...))
	if start.Kind != Login && start.Kind != StepUp {
		t.Fatalf("%s: %s %s, want a sign-in", target, start.Kind, start.Reason)
	}
	callback := tg.idp.signIn(t, start.Location, tg.clock.now(), claims)
	u, _ := url.Parse(callback)
	jar := merge(cookies, start.Cookies)
	out := tg.handle(request(http.MethodGet, u.RequestURI(), true, jar...))
	return out, merge(jar, out.Cookies)
}

// merge is what a browser holds after Set-Cookie: new values replace old
// ones of the same name; a negative Max-Age deletes.
func merge(have, set []*http.Cookie) []*http.Cookie {
	out := map[string]*http.Cookie{}
	var order []string
	for _, c := range append(append([]*http.Cookie(nil), have...), set...) {
		if _, ok := out[c.Name]; !ok {
			order = append(order, c.Name)
		}
		out[c.Name] = c
	}
	var jar []*http.Cookie
	for _, n := range order {
		if c := out[n]; c.MaxAge >= 0 && c.Value != "" {
			jar = append(jar, c)
		}
	}
	return jar
}

func cookieNamed(jar []*http.Cookie, name string) *http.Cookie {
	for _, c := range jar {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestSignIn(t *testing.T) {
	tg := newTestGate(t, nil)
	out, jar := tg.signIn(t, "/reports?page=2", map[string]any{"groups": []string{"staff"}, "department": "payroll"})
	want(t, "callback", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	if out.Location != "/reports?page=2" || out.Header.Get("Referrer-Policy") != "no-referrer" || out.Audit.User != "alice" {
		t.Errorf("callback: %q %v %+v", out.Location, out.Header, out.Audit)
	}
	if cookieNamed(jar, "__Host-gatehouse") == nil || cookieNamed(jar, "__Secure-gatehouse_idt") == nil {
		t.Fatalf("cookies after sign-in: %+v", jar)
	}
	out = tg.handle(request(http.MethodGet, "/reports", false, jar...))
	want(t, "signed in", out, Allow, 0, ResultAllow, ReasonNone)
	if v, _ := out.upstream("X-Department"); v != "payroll" {
		t.Errorf("a claim named by an identity header was not kept: %q", v)
	}

	// /.gatehouse/login starts a sign-in that returns to rd.
	out = tg.handle(request(http.MethodGet, "/.gatehouse/login?rd=/a%3Fb", true))
	want(t, "login", out, Login, http.StatusFound, ResultLogin, Reason(authn.ReasonNoCookie))
	out = tg.handle(request(http.MethodGet, "/.gatehouse/login?rd=https://evil.example/", true, jar...))
	want(t, "login with a session", out, Redirect, http.StatusFound, ResultInternal, ReasonAlreadySignedIn)
	if out.Location != "/" {
		t.Errorf("an offsite rd was followed: %q", out.Location)
	}
}

func TestCallbackRefusals(t *testing.T) {
	tg := newTestGate(t, nil)
	start := tg.handle(request(http.MethodGet, "/x", true))
	slot := start.Cookies
	callback := func(query string, cookies []*http.Cookie) Outcome {
		return tg.handle(request(http.MethodGet, "/.gatehouse/callback"+query, true, cookies...))
	}
	u, _ := url.Parse(start.Location)
	state := url.QueryEscape(u.Query().Get("state"))
	iss := url.QueryEscape(tg.idp.URL)
	for _, c := range []struct {
		name, query string
		cookies     []*http.Cookie
		status      int
		reason      Reason
	}{
		{"no state", "?code=x", slot, http.StatusBadRequest, ReasonStateMissing},
		{"two states", "?state=" + state + "&state=" + state + "&code=x", slot, http.StatusBadRequest, ReasonStateMissing},
		{"another browser", "?state=" + state + "&code=x", nil, http.StatusBadRequest, ReasonStateUnknown},
		{"a forged state", "?state=AAAAAAAAAAAAAAAAAAAAAAAAAA&code=x", slot, http.StatusBadRequest, ReasonStateMissing},
		{"another IdP", "?state=" + state + "&code=x&iss=https%3A%2F%2Fevil.example", slot, http.StatusBadRequest, ReasonIssuerMismatch},
		{"two issuers", "?state=" + state + "&code=x&iss=" + iss + "&iss=" + iss, slot, http.StatusBadRequest, ReasonIssuerMismatch},
		{"the IdP refused", "?state=" + state + "&error=access_denied", slot, http.StatusUnauthorized, "idp_access_denied"},
		{"an odd IdP error", "?state=" + state + "&error=Bad%3Cscript%3E", slot, http.StatusUnauthorized, ReasonIdPError},
		{"no code", "?state=" + state, slot, http.StatusBadRequest, ReasonCodeMissing},
		{"a code the IdP does not know", "?state=" + state + "&code=nope", slot, http.StatusUnauthorized, "code_rejected"},
	} {
		out := callback(c.query, c.cookies)
		want(t, c.name, out, Deny, c.status, ResultLoginFailed, c.reason)
		if out.Answer == nil || out.Answer.Error != "login_failed" || out.Answer.ActionURL != "/" {
			t.Errorf("%s: answer %+v", c.name, out.Answer)
		}
		// What the IdP's token endpoint said is kept for the operator.
		if c.reason == "code_rejected" {
			if idp := out.Audit.IdP; idp == nil || idp.Status != http.StatusBadRequest || idp.Code != "invalid_grant" {
				t.Errorf("%s: the IdP's refusal is not in the audit: %+v", c.name, idp)
			}
		} else if out.Audit.IdP != nil {
			t.Errorf("%s: audit names a token endpoint refusal: %+v", c.name, out.Audit.IdP)
		}
	}
	// Each sign-in answers once: the slot is spent at its first callback.
	out, jar := tg.signIn(t, "/x", nil)
	want(t, "a sign-in", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	first := tg.handle(request(http.MethodGet, "/x", true))
	cb := tg.idp.signIn(t, first.Location, tg.clock.now(), nil)
	cu, _ := url.Parse(cb)
	ok := tg.handle(request(http.MethodGet, cu.RequestURI(), true, merge(jar, first.Cookies)...))
	want(t, "first answer", ok, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	again := tg.handle(request(http.MethodGet, cu.RequestURI(), true, merge(merge(jar, first.Cookies), ok.Cookies)...))
	want(t, "the same answer again", again, Deny, http.StatusBadRequest, ResultLoginFailed, ReasonStateReplayed)
	replayed := tg.handle(request(http.MethodGet, cu.RequestURI(), true, merge(jar, first.Cookies)...))
	want(t, "the same answer with the unspent slot", replayed, Deny, http.StatusBadRequest, ResultLoginFailed, ReasonStateReplayed)
}

// TestSupersededSignIn: a browser holds a few sign-in slots; a sign-in
// whose slot a newer one took is restarted, not failed.
func TestSupersededSignIn(t *testing.T) {
	tg := newTestGate(t, nil)
	first := tg.handle(request(http.MethodGet, "/tab/a", true))
	jar := first.Cookies
	var newer Outcome
	for i := 0; ; i++ {
		if i == 100 {
			t.Fatal("100 sign-ins and none took the first one's slot")
		}
		newer = tg.handle(request(http.MethodGet, "/tab/b", true, jar...))
		jar = merge(jar, newer.Cookies)
		if newer.Cookies[0].Name == first.Cookies[0].Name {
			break
		}
	}
	u, _ := url.Parse(tg.idp.signIn(t, first.Location, tg.clock.now(), nil))
	out := tg.handle(request(http.MethodGet, u.RequestURI(), true, jar...))
	want(t, "the superseded tab's answer", out, Login, http.StatusFound, ResultLogin, ReasonLoginSuperseded)
	if out.Location != "/.gatehouse/login?rd=%2Ftab%2Fa" {
		t.Errorf("restart at %q", out.Location)
	}
	// The newer one completes.
	u, _ = url.Parse(tg.idp.signIn(t, newer.Location, tg.clock.now(), nil))
	want(t, "the newer tab's answer", tg.handle(request(http.MethodGet, u.RequestURI(), true, jar...)), Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
}

func TestLogout(t *testing.T) {
	tg := newTestGate(t, nil)
	_, jar := tg.signIn(t, "/x", nil)
	sess, _ := tg.cookies.read(request(http.MethodGet, "/", false, jar...), tg.clock.now())
	out := tg.handle(request(http.MethodPost, "/.gatehouse/logout", true, jar...))
	want(t, "logout", out, Redirect, http.StatusSeeOther, ResultLogout, ReasonIdPLogout)
	if !strings.HasPrefix(out.Location, tg.idp.URL+"/logout?") || !strings.Contains(out.Location, "id_token_hint=") ||
		!strings.Contains(out.Location, url.QueryEscape("https://app.example.com/.gatehouse/logout")) {
		t.Errorf("IdP logout %q", out.Location)
	}
	if c := out.cookie("__Secure-gatehouse_idt"); c == nil || c.MaxAge != -1 {
		t.Errorf("the ID-token cookie was not cleared: %+v", out.Cookies)
	}
	rv, err := tg.store.Revocations(context.Background(), tg.clock.now())
	if err != nil || len(rv.Sessions) != 1 {
		t.Errorf("the logout is not recorded in the store: %+v %v", rv, err)
	}
	// The old cookie is dead; the tombstone forces a password next time.
	jar = merge(jar, out.Cookies)
	want(t, "after logout", tg.handle(request(http.MethodGet, "/x", false, jar...)), Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonLoggedOut))
	if sess == nil {
		t.Fatal("no session was signed in")
	}
	want(t, "the old cookie", tg.handle(request(http.MethodGet, "/x", false, tg.cookie(t, sess))), Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonRevoked))
	// Back from the IdP: the signed-out page.
	out = tg.handle(request(http.MethodGet, "/.gatehouse/logout", true, jar...))
	want(t, "signed out", out, Page, http.StatusOK, ResultLogout, ReasonLoggedOut)
	if out.Answer == nil || out.Answer.Title != "Signed out" || out.Answer.Reference != "" {
		t.Errorf("signed-out page %+v", out.Answer)
	}
}

func TestStepUpEndpoint(t *testing.T) {
	mfa := authn.Requirement{ACR: []string{"urn:mfa"}, MaxAge: 5 * time.Minute}
	tg := newTestGate(t, func(c *Config) {
		c.StepUp = authn.StepUpRules{{Paths: globPaths{"/admin/*"}, Requirement: mfa}}
	})
	_, jar := tg.signIn(t, "/x", map[string]any{"acr": "urn:pwd"})
	want(t, "not needed", tg.handle(request(http.MethodGet, "/.gatehouse/stepup?rd=/x", true, jar...)), Redirect, http.StatusFound, ResultInternal, ReasonStepUpNotNeeded)
	want(t, "without a session", tg.handle(request(http.MethodGet, "/.gatehouse/stepup?rd=/admin/x", true)), Login, http.StatusFound, ResultLogin, Reason(authn.ReasonNoCookie))

	// Someone else signs in at the IdP: refused, and the session stays.
	out, _ := tg.signIn(t, "/.gatehouse/stepup?rd=/admin/x", map[string]any{"sub": "mallory", "acr": "urn:mfa"}, jar...)
	want(t, "another user", out, Deny, http.StatusForbidden, ResultLoginFailed, ReasonIdentityMismatch)
	if len(out.Events) != 1 || out.Events[0].Msg != EventStepUpRefused {
		t.Errorf("events %+v", out.Events)
	}
	// A weaker sign-in is refused.
	out, _ = tg.signIn(t, "/.gatehouse/stepup?rd=/admin/x", map[string]any{"acr": "urn:pwd"}, jar...)
	want(t, "weaker acr", out, Deny, http.StatusForbidden, ResultLoginFailed, "weaker_acr")
	// The real thing upgrades the session.
	out, jar = tg.signIn(t, "/.gatehouse/stepup?rd=/admin/x", map[string]any{"acr": "urn:mfa"}, jar...)
	want(t, "step-up", out, Redirect, http.StatusFound, ResultStepUpOK, ReasonNone)
	if out.Location != "/admin/x" || len(out.Events) != 1 || out.Events[0].Msg != EventStepUpSucceeded {
		t.Errorf("step-up: %q %+v", out.Location, out.Events)
	}
	want(t, "the page", tg.handle(request(http.MethodGet, "/admin/x", false, jar...)), Allow, 0, ResultAllow, ReasonNone)
	// Five minutes later it is stale again.
	tg.clock.add(6 * time.Minute)
	want(t, "stale", tg.handle(request(http.MethodGet, "/admin/x", false, jar...)), StepUp, http.StatusUnauthorized, ResultStepUpRequired, ReasonStepUpMaxAge)
}

func TestStepOutToASecondProvider(t *testing.T) {
	eid := newTestIdP(t)
	tg := newTestGate(t, func(c *Config) {
		c.Providers = map[string]*Provider{"eid": {Issuer: eid.URL, ClientID: "gh", LinkClaim: "email", Claims: []string{"birthdate"},
			IdP: IdP{Discovery: authn.NewDiscovery(eid.URL, eid.Client()), Used: authn.NewUsedStates()}}}
		c.StepUp = authn.StepUpRules{{Paths: globPaths{"/tax/*"}, Requirement: authn.Requirement{Provider: "eid", ACR: []string{"eidas-high"}}}}
	})
	_, jar := tg.signIn(t, "/x", nil)
	out := tg.handle(request(http.MethodGet, "/tax/return", true, jar...))
	want(t, "step-out", out, StepUp, http.StatusFound, ResultStepUp, ReasonStepUpVerify)
	back := func(claims map[string]any) Outcome {
		u, _ := url.Parse(eid.signIn(t, out.Location, tg.clock.now(), claims))
		return tg.handle(request(http.MethodGet, u.RequestURI(), true, merge(jar, out.Cookies)...))
	}
	res := back(map[string]any{"email": "mallory@example.com", "acr": "eidas-high"})
	want(t, "someone else's eID", res, Deny, http.StatusForbidden, ResultLoginFailed, ReasonLinkMismatch)
	out = tg.handle(request(http.MethodGet, "/tax/return", true, jar...))
	res = back(map[string]any{"acr": "eidas-high", "birthdate": "1990-01-01"})
	want(t, "the user's eID", res, Redirect, http.StatusFound, ResultStepUpOK, ReasonNone)
	jar = merge(merge(jar, out.Cookies), res.Cookies)
	want(t, "verified", tg.handle(request(http.MethodGet, "/tax/return", false, jar...)), Allow, 0, ResultAllow, ReasonNone)
}

// form posts a form to one of Gatehouse's pages, from its own origin.
func form(path string, values url.Values, cookies ...*http.Cookie) *http.Request {
	body := values.Encode()
	r := request(http.MethodPost, path, false, cookies...)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", "https://app.example.com")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	r.Body, r.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
	return r
}

// TestJustInTimeAccess: the whole workflow, on the gate alone: a deny
// offers a grant, the user asks for it, an approver approves it, the user
// has it, sees it and ends it; every step refuses what it must.
func TestJustInTimeAccess(t *testing.T) {
	tg := policyGate(t, nil)
	alice := tg.session()
	ac := tg.cookie(t, alice)
	deny := tg.handle(request(http.MethodGet, "/grant", false, ac))
	offer := deny.Answer.JSON.(struct {
		*Answer
		RequestGrant map[string]string `json:"request_grant"`
	}).RequestGrant
	ask := url.Values{"csrf": {offer["csrf"]}, "offer": {offer["offer"]}, "reason": {"month end \u202e"}, "duration": {"30m"}}

	for _, c := range []struct {
		name         string
		field, value string // a form field changed (value "" removes it)
		header, hval string // a header changed
		status       int
		reason       Reason
	}{
		{"no CSRF token", "csrf", "", "", "", http.StatusForbidden, ReasonCSRF},
		{"another session's CSRF token", "csrf", tg.csrf.Token("s2"), "", "", http.StatusForbidden, ReasonCSRF},
		{"another site", "", "", "Sec-Fetch-Site", "cross-site", http.StatusForbidden, ReasonCrossSiteForm},
		{"another origin", "", "", "Origin", "https://evil.example", http.StatusForbidden, ReasonCrossSiteForm},
		{"a forged offer", "offer", "x", "", "", http.StatusForbidden, ReasonOfferInvalid},
		{"no reason", "reason", " \x00 ", "", "", http.StatusBadRequest, ReasonReasonMissing},
		{"too long", "duration", "2h", "", "", http.StatusBadRequest, ReasonDurationInvalid},
		{"not a duration", "duration", "forever", "", "", http.StatusBadRequest, ReasonDurationInvalid},
	} {
		v := url.Values{}
		for k, vs := range ask {
			v[k] = vs
		}
		if c.field != "" {
			v.Set(c.field, c.value)
			if c.value == "" {
				v.Del(c.field)
			}
		}
		r := form("/.gatehouse/request", v, ac)
		if c.header != "" {
			r.Header.Set(c.header, c.hval)
		}
		want(t, c.name, tg.handle(r), Deny, c.status, ResultDeny, c.reason)
	}
	out := tg.handle(form("/.gatehouse/request", ask, ac))
	want(t, "request", out, Redirect, http.StatusSeeOther, ResultGrantRequested, ReasonNone)
	if out.Location != "/.gatehouse/access?notice=requested" || len(out.Events) != 1 || out.Events[0].Msg != EventGrantRequested {
		t.Errorf("request: %q %+v", out.Location, out.Events)
	}
	want(t, "again", tg.handle(form("/.gatehouse/request", ask, ac)), Redirect, http.StatusSeeOther, ResultGrantRequested, ReasonAlreadyPending)
	reqs, _ := tg.store.Requests(context.Background(), grants.RequestFilter{App: "payroll"})
	if len(reqs) != 1 || reqs[0].Reason != "month end" || reqs[0].Duration != 1800 {
		t.Fatalf("requests %+v", reqs)
	}

	// The requester cannot approve their own request.
	self := tg.session()
	self.Groups = []string{"approvers"}
	sc := tg.cookie(t, self)
	page := tg.handle(request(http.MethodGet, "/.gatehouse/approvals", false, sc))
	want(t, "own approvals page", page, Page, http.StatusOK, ResultInternal, ReasonApprovals)
	csrf := tg.csrf.Token(self.ID)
	decide := url.Values{"csrf": {csrf}, "request": {reqs[0].ID}, "action": {"approve"}}
	out = tg.handle(form("/.gatehouse/approvals", decide, sc))
	want(t, "approving one's own", out, Deny, http.StatusForbidden, ResultDeny, ReasonNotAnApprover)
	if len(out.Events) != 1 || out.Events[0].Msg != EventApprovalRefused {
		t.Errorf("events %+v", out.Events)
	}

	// Carol approves it.
	carol := &authn.Session{ID: "s2", Subject: "carol", Issuer: tg.idp.URL, Email: "carol@example.com", Groups: []string{"approvers"},
		Created: tg.clock.now().Unix() - 60, LastSeen: tg.clock.now().Unix()}
	cc := tg.cookie(t, carol)
	page = tg.handle(request(http.MethodGet, "/.gatehouse/approvals", false, cc))
	if len(page.Answer.Data.(AccessPage).Requests) != 1 {
		t.Fatalf("carol's approvals page: %+v", page.Answer.Data)
	}
	decide.Set("csrf", tg.csrf.Token(carol.ID))
	want(t, "a bad action", tg.handle(form("/.gatehouse/approvals", url.Values{"csrf": decide["csrf"], "request": decide["request"], "action": {"maybe"}}, cc)),
		BadRequest, http.StatusBadRequest, ResultDeny, ReasonBadForm)
	want(t, "an unknown request", tg.handle(form("/.gatehouse/approvals", url.Values{"csrf": decide["csrf"], "request": {"nope"}, "action": {"approve"}}, cc)),
		BadRequest, http.StatusNotFound, ResultDeny, ReasonRequestUnknown)
	out = tg.handle(form("/.gatehouse/approvals", decide, cc))
	want(t, "approve", out, Redirect, http.StatusSeeOther, ResultGrantApproved, ReasonNone)
	want(t, "approve again", tg.handle(form("/.gatehouse/approvals", decide, cc)), Redirect, http.StatusSeeOther, ResultInternal, ReasonNone)

	// Alice has it, and sees it.
	gs, _ := tg.store.Grants(context.Background(), grants.GrantFilter{User: &grants.User{Iss: tg.cfg.Issuer, Sub: "alice"}, Now: tg.clock.now()})
	if len(gs) != 1 || gs[0].ExpiresAt != tg.clock.now().Add(30*time.Minute).Unix() {
		t.Fatalf("grants %+v", gs)
	}
	page = tg.handle(request(http.MethodGet, "/.gatehouse/access", false, ac))
	want(t, "my access", page, Page, http.StatusOK, ResultInternal, ReasonMyAccess)
	if ap := page.Answer.Data.(AccessPage); len(ap.Grants) != 1 || ap.Grants[0].Left != "30 minutes" {
		t.Errorf("my access %+v", ap)
	}
	// Ending someone else's grant, or one that does not exist, is refused.
	end := url.Values{"csrf": {tg.csrf.Token(alice.ID)}, "grant": {gs[0].ID}, "action": {"end"}}
	want(t, "carol ends alice's grant", tg.handle(form("/.gatehouse/access", url.Values{"csrf": {tg.csrf.Token(carol.ID)}, "grant": {gs[0].ID}, "action": {"end"}}, cc)),
		BadRequest, http.StatusNotFound, ResultDeny, ReasonNotYourGrant)
	out = tg.handle(form("/.gatehouse/access", end, ac))
	want(t, "end", out, Redirect, http.StatusSeeOther, ResultGrantRevoked, ReasonNone)
	if len(out.Events) != 1 || out.Events[0].Msg != EventGrantRevoked {
		t.Errorf("events %+v", out.Events)
	}
}

func TestAutoApproval(t *testing.T) {
	tg := policyGate(t, nil)
	s := tg.session()
	s.Groups = []string{"trusted"}
	c := tg.cookie(t, s)
	deny := tg.handle(request(http.MethodGet, "/grant?x=1", false, c))
	offer := deny.Answer.JSON.(struct {
		*Answer
		RequestGrant map[string]string `json:"request_grant"`
	}).RequestGrant
	out := tg.handle(form("/.gatehouse/request", url.Values{"csrf": {offer["csrf"]}, "offer": {offer["offer"]}, "reason": {"x"}, "duration": {"1h"}}, c))
	want(t, "auto-approved", out, Redirect, http.StatusSeeOther, ResultGrantRequested, ReasonNone)
	if out.Location != "/grant?x=1" || len(out.Events) != 2 || out.Events[1].Msg != EventGrantAutoApproved {
		t.Errorf("auto-approval: %q %+v", out.Location, out.Events)
	}
	// Capped by the approval policy's 15 minutes, not the 1h asked.
	gs, _ := tg.store.Grants(context.Background(), grants.GrantFilter{User: &grants.User{Iss: tg.cfg.Issuer, Sub: "alice"}, Now: tg.clock.now()})
	if len(gs) != 1 || gs[0].ExpiresAt != tg.clock.now().Add(15*time.Minute).Unix() {
		t.Errorf("grants %+v", gs)
	}
	// An expired offer is refused.
	tg.clock.add(offerTTL)
	s.LastSeen = tg.clock.now().Unix()
	c = tg.cookie(t, s)
	want(t, "an expired offer", tg.handle(form("/.gatehouse/request", url.Values{"csrf": {offer["csrf"]}, "offer": {offer["offer"]}, "reason": {"x"}, "duration": {"1h"}}, c)),
		Deny, http.StatusForbidden, ResultDeny, ReasonOfferExpired)
}

func TestPagesNeedASession(t *testing.T) {
	tg := policyGate(t, nil)
	for _, p := range []string{"/.gatehouse/access", "/.gatehouse/approvals"} {
		want(t, p, tg.handle(request(http.MethodGet, p, false)), Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonNoCookie))
		out := tg.handle(request(http.MethodGet, p, true))
		want(t, p+" navigation", out, Login, http.StatusFound, ResultLogin, Reason(authn.ReasonNoCookie))
	}
	noPolicy := newTestGate(t, nil)
	want(t, "approvals without a policy", noPolicy.handle(request(http.MethodGet, "/.gatehouse/approvals", false, noPolicy.cookie(t, noPolicy.session()))),
		Page, http.StatusOK, ResultInternal, ReasonNoPolicy)
	// The store down: the pages say so.
	down := grants.NewCache(downStore{Store: deadRequests{grants.NewMemory()}}, 10*time.Millisecond)
	t.Cleanup(func() { _ = down.Close() })
	dg := newTestGate(t, func(c *Config) { c.Grants = down })
	want(t, "my access, store down", dg.handle(request(http.MethodGet, "/.gatehouse/access", false, dg.cookie(t, dg.session()))),
		Unavailable, http.StatusServiceUnavailable, ResultError, ReasonGrantsDown)
}

// deadRequests is a store whose grant listings fail.
type deadRequests struct{ grants.Store }

func (deadRequests) Grants(context.Context, grants.GrantFilter) ([]grants.Grant, error) {
	return nil, grants.ErrUnavailable
}

func TestApprovalStepUp(t *testing.T) {
	tg := policyGate(t, func(c *Config) {
		c.ApprovalStepUp = &authn.Requirement{ACR: []string{"urn:mfa"}, MaxAge: 10 * time.Minute}
	})
	s := tg.session()
	s.Groups, s.ACR = []string{"approvers"}, "urn:pwd"
	c := tg.cookie(t, s)
	out := tg.handle(request(http.MethodGet, "/.gatehouse/approvals", false, c))
	want(t, "approvals without the step-up", out, StepUp, http.StatusUnauthorized, ResultStepUpRequired, ReasonStepUpACR)
	// The URL the 401 names starts the step-up (not a loop back to the 401).
	u, _ := url.Parse(out.Answer.StepUpURL)
	out = tg.handle(request(http.MethodGet, u.RequestURI(), true, c))
	want(t, "its step_up_url", out, StepUp, http.StatusFound, ResultStepUp, ReasonStepUpACR)
	// Requirements that cannot be met together are an internal failure
	// here (the configuration check refuses them for step_up rules).
	bad := policyGate(t, func(c *Config) {
		c.ApprovalStepUp = &authn.Requirement{ACR: []string{"a"}}
		c.StepUp = authn.StepUpRules{{Paths: globPaths{"/.gatehouse/*"}, Requirement: authn.Requirement{ACR: []string{"b"}}}}
	})
	if out := bad.handle(request(http.MethodGet, "/.gatehouse/approvals", false, bad.cookie(t, bad.session()))); out.Kind != Failure || out.Err == nil {
		t.Errorf("conflicting approval step-up: %s %v", out.Kind, out.Err)
	}
}

// TestEveryKind: each Kind is the outcome of some request (the tests
// above check each in detail).
func TestEveryKind(t *testing.T) {
	tg := policyGate(t, nil)
	c := tg.cookie(t, tg.session())
	echo := request(http.MethodGet, "/echo", false, c)
	echo.Header.Set("User-Agent", "test")
	seen := map[Kind]bool{}
	for _, r := range []*http.Request{
		echo,                                 // Allow
		request(http.MethodGet, "/x", false), // Login
		request(http.MethodGet, "/stepup", false, c),                   // StepUp
		request(http.MethodGet, "/", false, c),                         // Deny
		request(http.MethodGet, "/a;b", false),                         // BadRequest
		request(http.MethodGet, "/.gatehouse/login?rd=/", false, c),    // Redirect
		request(http.MethodGet, "/.gatehouse/healthz", false),          // Page
		request(http.MethodGet, "/.gatehouse/stepup?rd=/stepup", true), // Login (navigation)
	} {
		seen[tg.handle(r).Kind] = true
	}
	down := newTestGate(t, func(c *Config) {
		c.Issuer = "https://idp.invalid"
		c.IdP.Discovery = authn.NewDiscovery(c.Issuer, &http.Client{Timeout: time.Second})
	})
	seen[down.handle(request(http.MethodGet, "/x", true)).Kind] = true // Unavailable
	seen[Failure] = true                                               // TestApprovalStepUp
	for k := Allow; k <= Failure; k++ {
		if !seen[k] {
			t.Errorf("no request had the outcome %s", k)
		}
	}
}
