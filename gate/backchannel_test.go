package gate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// logoutToken is a logout token from the test IdP for alice's IdP
// session idp-1, issued now; change edits its claims.
func (tg *testGate) logoutToken(t *testing.T, change func(c map[string]any)) string {
	t.Helper()
	now := tg.clock.now()
	c := map[string]any{"iss": tg.idp.URL, "aud": "gatehouse", "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": rand.Text(), "sub": "alice", "sid": "idp-1",
		"events": map[string]any{authn.BackchannelLogoutEvent: map[string]any{}}}
	if change != nil {
		change(c)
	}
	return tg.idp.sign(t, c)
}

// backchannel is the IdP's POST to the back-channel logout endpoint.
func backchannel(contentType, body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "https://app.example.com"+PathBackchannelLogout, strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

func tokenForm(tok string) string { return url.Values{"logout_token": {tok}}.Encode() }

const formType = "application/x-www-form-urlencoded"

// wantRefusedLogout checks a refused back-channel logout: 400, no-store,
// and the OAuth error body of Back-Channel Logout 1.0 section 2.8.
func wantRefusedLogout(t *testing.T, what string, out Outcome, result Result, reason Reason) {
	t.Helper()
	want(t, what, out, BadRequest, http.StatusBadRequest, result, reason)
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(out.Body, &body); err != nil || body.Error != "invalid_request" || body.Description == "" ||
		out.Header.Get("Content-Type") != "application/json" || out.Header.Get("Cache-Control") != "no-store" ||
		out.Location != "" || out.Answer != nil || len(out.Cookies) != 0 {
		t.Errorf("%s: answered %s %v %+v", what, out.Body, out.Header, out)
	}
}

// TestBackchannelLogout: a logout token naming an IdP session revokes
// the sessions signed in through it, and only those; one naming only the
// user revokes all of theirs; a replay is refused on any node; and the
// answers are those of Back-Channel Logout 1.0 (200 no-store, or 400
// with an OAuth error).
func TestBackchannelLogout(t *testing.T) {
	tg := newTestGate(t, nil)
	_, laptop := tg.signIn(t, "/x", map[string]any{"sid": "idp-1"})
	_, phone := tg.signIn(t, "/x", map[string]any{"sid": "idp-2"}) // alice, another IdP session
	_, bob := tg.signIn(t, "/x", map[string]any{"sub": "bob", "sid": "idp-3"})
	_, noSID := tg.signIn(t, "/x", nil) // an IdP that sends no sid
	for name, jar := range map[string][]*http.Cookie{"laptop": laptop, "phone": phone, "bob": bob, "no sid": noSID} {
		want(t, name+" before", tg.handle(request(http.MethodGet, "/x", false, jar...)), Allow, 0, ResultAllow, ReasonNone)
	}
	// The session cookie records the IdP session as a key of fixed size,
	// not the sid.
	s, _ := tg.cookies.read(request(http.MethodGet, "/", false, laptop...), tg.clock.now())
	if s == nil || s.IdPSession != (grants.IdPSession{Iss: tg.idp.URL, SID: "idp-1"}).Key() {
		t.Fatalf("the session does not record its IdP session: %+v", s)
	}

	// From another site, without a session or a CSRF token: the token's
	// signature is the proof.
	tok := tg.logoutToken(t, nil)
	r := backchannel(formType+"; charset=UTF-8", tokenForm(tok))
	r.Header.Set("Origin", "https://evil.example")
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	out := tg.handle(r)
	want(t, "a logout token for idp-1", out, Page, http.StatusOK, ResultLogout, ReasonBackchannelLogout)
	if out.Header.Get("Cache-Control") != "no-store" || len(out.Body) != 0 || out.Answer != nil || out.Location != "" || out.Audit.User != "alice" {
		t.Errorf("the answer: %v %q %+v", out.Header, out.Body, out)
	}
	if len(out.Events) != 1 || out.Events[0].Msg != EventBackchannelLogout || out.Events[0].Failed {
		t.Fatalf("events: %+v", out.Events)
	}
	fields := map[string]string{}
	for _, f := range out.Events[0].Fields {
		fields[f.Key] = f.String
	}
	if fields["user"] != "alice" || fields["iss"] != tg.idp.URL || fields["idp_session"] != s.IdPSession {
		t.Errorf("the event's fields: %v", fields)
	}
	for k, v := range fields {
		if strings.Contains(v, "idp-1") || strings.Contains(v, tok) {
			t.Errorf("the event's %s holds the sid or the token: %q", k, v)
		}
	}
	out = tg.handle(request(http.MethodGet, "/x", false, laptop...))
	want(t, "the laptop after", out, Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonEndedAtIdP))
	nav := tg.handle(request(http.MethodGet, "/x", true, laptop...))
	if nav.Kind != Login || !strings.Contains(nav.Location, "prompt=login") {
		t.Errorf("a navigation from the laptop after: %s %q", nav.Kind, nav.Location)
	}
	for name, jar := range map[string][]*http.Cookie{"phone": phone, "bob": bob, "no sid": noSID} {
		want(t, name+" after idp-1 ended", tg.handle(request(http.MethodGet, "/x", false, jar...)), Allow, 0, ResultAllow, ReasonNone)
	}

	// Replayed here, or at another node on the same store.
	wantRefusedLogout(t, "the token again", tg.handle(backchannel(formType, tokenForm(tok))), ResultLogoutRefused, ReasonLogoutTokenReplayed)
	node2 := newTestGate(t, func(c *Config) {
		c.Issuer, c.IdP = tg.cfg.Issuer, tg.cfg.IdP
		c.Grants = grants.NewCache(tg.store, 50*time.Millisecond)
		t.Cleanup(func() { _ = c.Grants.Close() })
	})
	node2.clock = tg.clock
	wantRefusedLogout(t, "the token at another node", node2.handle(backchannel(formType, tokenForm(tok))), ResultLogoutRefused, ReasonLogoutTokenReplayed)
	// That node, started after, enforces the IdP session's end too.
	want(t, "the laptop at another node", node2.handle(request(http.MethodGet, "/x", false, laptop...)),
		Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonEndedAtIdP))
	rv, err := tg.store.Revocations(context.Background(), tg.clock.now())
	if until := rv.IdPSessions[s.IdPSession]; err != nil || until != tg.clock.now().Add(12*time.Hour).Unix() {
		t.Errorf("the store holds the IdP session's end until +%ds (%v)", until-tg.clock.now().Unix(), err)
	}

	// A token naming only the user ends all of that user's sessions.
	out = tg.handle(backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) { c["sub"] = "bob"; delete(c, "sid") }))))
	want(t, "a logout token for bob", out, Page, http.StatusOK, ResultLogout, ReasonBackchannelLogout)
	if out.Events[0].Fields[2].Key != "sessions" {
		t.Errorf("the event of a user's logout: %+v", out.Events[0].Fields)
	}
	want(t, "bob after", tg.handle(request(http.MethodGet, "/x", false, bob...)), Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonRevoked))
	want(t, "alice's phone after bob's logout", tg.handle(request(http.MethodGet, "/x", false, phone...)), Allow, 0, ResultAllow, ReasonNone)
	// bob signs in again: a new session is not revoked.
	tg.clock.add(2 * time.Second)
	_, bob = tg.signIn(t, "/x", map[string]any{"sub": "bob", "sid": "idp-4"})
	want(t, "bob signed in again", tg.handle(request(http.MethodGet, "/x", false, bob...)), Allow, 0, ResultAllow, ReasonNone)
}

// TestBackchannelLogoutRefusals: every request that is not a valid
// logout token, properly sent, is refused with its own reason and
// revokes nothing.
func TestBackchannelLogoutRefusals(t *testing.T) {
	tg := newTestGate(t, nil)
	_, jar := tg.signIn(t, "/x", map[string]any{"sid": "idp-1"})
	good := tokenForm(tg.logoutToken(t, nil))
	cases := []struct {
		name   string
		req    *http.Request
		reason Reason
	}{
		{"JSON", backchannel("application/json", `{"logout_token":"x"}`), ReasonBackchannelContentType},
		{"no content type", backchannel("", good), ReasonBackchannelContentType},
		{"multipart", backchannel("multipart/form-data; boundary=x", good), ReasonBackchannelContentType},
		{"text/plain", backchannel("text/plain", good), ReasonBackchannelContentType},
		{"a body over 32 KiB", backchannel(formType, good+"&pad="+strings.Repeat("x", 33<<10)), ReasonBackchannelBody},
		{"no logout_token", backchannel(formType, "token=x"), ReasonLogoutTokenMissing},
		{"an empty body", backchannel(formType, ""), ReasonLogoutTokenMissing},
		{"two logout_tokens", backchannel(formType, good+"&"+good), ReasonLogoutTokenMissing},
		{"an unreadable form", backchannel(formType, "logout_token=%zz"), ReasonLogoutTokenMissing},
		{"the token in the query", func() *http.Request {
			r := backchannel(formType, "")
			r.URL.RawQuery = good
			return r
		}(), ReasonLogoutTokenMissing},
		{"not a token", backchannel(formType, tokenForm("x")), Reason(authn.LogoutMalformed)},
		{"alg none", backchannel(formType, tokenForm(func() string {
			parts := strings.Split(tg.logoutToken(t, nil), ".")
			return "eyJhbGciOiJub25lIn0." + parts[1] + "."
		}())), Reason(authn.LogoutAlg)},
		{"another key", backchannel(formType, tokenForm(func() string {
			parts := strings.Split(tg.logoutToken(t, nil), ".")
			other := strings.Split(tg.logoutToken(t, func(c map[string]any) { c["sub"] = "bob" }), ".")
			return parts[0] + "." + other[1] + "." + parts[2]
		}())), Reason(authn.LogoutSignature)},
		{"another issuer", backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) { c["iss"] = "https://evil.example" }))), Reason(authn.LogoutIssuer)},
		{"another client", backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) { c["aud"] = "other" }))), Reason(authn.LogoutAudience)},
		{"iat an hour ago", backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) {
			c["iat"], c["exp"] = tg.clock.now().Add(-time.Hour).Unix(), tg.clock.now().Add(time.Hour).Unix()
		}))), Reason(authn.LogoutIAT)},
		{"iat an hour ahead", backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) { c["iat"] = tg.clock.now().Add(time.Hour).Unix() }))), Reason(authn.LogoutIAT)},
		{"expired", backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) { c["exp"] = tg.clock.now().Add(-time.Minute).Unix() }))), Reason(authn.LogoutExpired)},
		{"no events", backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) { delete(c, "events") }))), Reason(authn.LogoutEvents)},
		{"events not an object", backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) { c["events"] = "logout" }))), Reason(authn.LogoutEvents)},
		{"a nonce", backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) { c["nonce"] = "n" }))), Reason(authn.LogoutNonce)},
		{"neither sid nor sub", backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) { delete(c, "sid"); delete(c, "sub") }))), Reason(authn.LogoutSubject)},
		{"no jti", backchannel(formType, tokenForm(tg.logoutToken(t, func(c map[string]any) { delete(c, "jti") }))), Reason(authn.LogoutJTI)},
	}
	for _, c := range cases {
		wantRefusedLogout(t, c.name, tg.handle(c.req), ResultLogoutRefused, c.reason)
	}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodHead} {
		out := tg.handle(httptest.NewRequest(m, "https://app.example.com"+PathBackchannelLogout, nil))
		want(t, m, out, BadRequest, http.StatusMethodNotAllowed, ResultInternal, ReasonMethodNotAllowed)
		if out.Header.Get("Allow") != "POST" {
			t.Errorf("%s: Allow %q", m, out.Header.Get("Allow"))
		}
	}
	want(t, "alice after the refusals", tg.handle(request(http.MethodGet, "/x", false, jar...)), Allow, 0, ResultAllow, ReasonNone)
	// The good token was never used by the refusals around it.
	want(t, "the good token", tg.handle(backchannel(formType, good)), Page, http.StatusOK, ResultLogout, ReasonBackchannelLogout)
}

// unrecordingStore cannot record anything: as a Redis that went down.
type unrecordingStore struct{ grants.Store }

func (unrecordingStore) FirstUse(context.Context, string, time.Time, time.Time) (bool, error) {
	return false, grants.ErrUnavailable
}

func (unrecordingStore) RevokeIdPSession(context.Context, grants.IdPSession, time.Time) error {
	return grants.ErrUnavailable
}

// TestBackchannelLogoutOutages: with the IdP's keys out of reach nothing
// is done (it cannot be verified); with the grant store down the logout
// is still done on this node, and the answer and the audit say it was
// not recorded.
func TestBackchannelLogoutOutages(t *testing.T) {
	down := newTestGate(t, func(c *Config) {
		c.Issuer = "https://idp.invalid"
		c.IdP.Discovery = authn.NewDiscovery(c.Issuer, &http.Client{Timeout: time.Second})
	})
	tok := down.logoutToken(t, func(c map[string]any) { c["iss"] = "https://idp.invalid" })
	wantRefusedLogout(t, "the IdP down", down.handle(backchannel(formType, tokenForm(tok))), ResultError, ReasonIdPUnavailable)

	tg := newTestGate(t, nil)
	_, jar := tg.signIn(t, "/x", map[string]any{"sid": "idp-1"})
	tg.cfg.Grants = grants.NewCache(unrecordingStore{tg.store}, 50*time.Millisecond)
	t.Cleanup(func() { _ = tg.cfg.Grants.Close() })
	out := tg.handle(backchannel(formType, tokenForm(tg.logoutToken(t, nil))))
	wantRefusedLogout(t, "the store down", out, ResultError, ReasonLogoutNotRecorded)
	if len(out.Events) != 1 || out.Events[0].Msg != EventBackchannelLogoutFailed || !out.Events[0].Failed {
		t.Errorf("events: %+v", out.Events)
	}
	want(t, "alice on this node", tg.handle(request(http.MethodGet, "/x", false, jar...)), Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonEndedAtIdP))
}
