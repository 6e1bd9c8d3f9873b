package gate

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// Several IdPs for one app: the staff's (corp, for example.com) and a
// partner's (for partner.example), each an in-process IdP with keys of
// its own.

var partnerKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

type twoIdPs struct {
	*testGate
	corp, partner *testIdP
}

func idpConfig(name, label string, p *testIdP, clientID string, domains ...string) IdPConfig {
	return IdPConfig{Name: name, Label: label, Issuer: p.URL, ClientID: clientID, Scopes: []string{"openid", "email"},
		GroupsClaim: "groups", Domains: domains, IdP: IdP{Discovery: authn.NewDiscovery(p.URL, p.Client()), Used: authn.NewUsedStates()}}
}

// newTwoIdPGate is the payroll site with two IdPs; change adjusts the
// configuration (and the IdPs, before their first use) first.
func newTwoIdPGate(t testing.TB, change func(*Config, *testIdP, *testIdP)) *twoIdPs {
	t.Helper()
	corp, partner := newTestIdP(t), newTestIdPKey(t, partnerKey())
	tg := newTestGate(t, func(c *Config) {
		c.Issuer, c.ClientID, c.IdP = "", "", IdP{}
		c.IdPs = []IdPConfig{
			idpConfig("corp", "Example staff", corp, "gatehouse", "example.com"),
			idpConfig("partner", "Partner staff", partner, "gatehouse-partner", "Partner.Example"),
		}
		if change != nil {
			change(c, corp, partner)
		}
	})
	return &twoIdPs{testGate: tg, corp: corp, partner: partner}
}

// signInAt signs in at the IdP named name (p), through
// /.gatehouse/login?idp=<name>, as the user claims describe; it returns
// the callback's outcome and the browser's cookies.
func (tt *twoIdPs) signInAt(t *testing.T, name string, p *testIdP, claims map[string]any, jar ...*http.Cookie) (Outcome, []*http.Cookie) {
	t.Helper()
	start := tt.handle(request(http.MethodGet, "/.gatehouse/login?idp="+name+"&rd=/x", true, jar...))
	if start.Kind != Login || !strings.HasPrefix(start.Location, p.URL+"/auth?") {
		t.Fatalf("login at %s: %s %d %s %q", name, start.Kind, start.Status, start.Reason, start.Location)
	}
	u, _ := url.Parse(p.signIn(t, start.Location, tt.clock.now(), claims))
	jar = merge(jar, start.Cookies)
	out := tt.handle(request(http.MethodGet, u.RequestURI(), true, jar...))
	return out, merge(jar, out.Cookies)
}

func TestTwoIdPsSignIn(t *testing.T) {
	tt := newTwoIdPGate(t, nil)

	// Without a session, a navigation goes to the sign-in page (never
	// to one IdP), an API request gets a 401 naming it.
	out := tt.handle(request(http.MethodGet, "/reports?page=2", true))
	want(t, "navigation", out, Login, http.StatusFound, ResultLogin, Reason(authn.ReasonNoCookie))
	if out.Location != "/.gatehouse/login?rd=%2Freports%3Fpage%3D2" {
		t.Errorf("navigation sent to %q", out.Location)
	}
	out = tt.handle(request(http.MethodGet, "/reports", false))
	if out.Status != http.StatusUnauthorized || out.Answer == nil || out.Answer.LoginURL != "/.gatehouse/login?rd=%2Freports" {
		t.Errorf("API request: %d %+v", out.Status, out.Answer)
	}

	// The sign-in page: a button for each IdP, in order, and the email
	// field; its JSON names no issuer, client or domain.
	out = tt.handle(request(http.MethodGet, "/.gatehouse/login?rd=/reports", true))
	want(t, "sign-in page", out, Page, http.StatusOK, ResultInternal, ReasonChooseIdP)
	page, _ := out.Answer.Data.(*SignInPage)
	if out.Answer.Page != "signin" || page == nil || len(page.IdPs) != 2 || page.IdPs[0] != (IdPChoice{"corp", "Example staff", "/.gatehouse/login?idp=corp&rd=%2Freports"}) ||
		page.IdPs[1].Name != "partner" || page.IdPs[1].Label != "Partner staff" || !page.ByEmail || page.Return != "/reports" {
		t.Errorf("sign-in page %+v %+v", out.Answer, page)
	}
	b, _ := json.Marshal(out.Answer.JSON)
	if !strings.Contains(string(b), `"idps":[{"name":"corp","label":"Example staff","login_url":"/.gatehouse/login?idp=corp\u0026rd=%2Freports"}`) {
		t.Errorf("sign-in page JSON %s", b)
	}
	for _, secret := range []string{tt.corp.URL, tt.partner.URL, "gatehouse-partner", "partner.example", "example.com"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("the sign-in page's JSON names %q: %s", secret, b)
		}
	}

	// Each IdP's users sign in there, with that IdP's client, and are
	// that IdP's users.
	out, jar := tt.signInAt(t, "partner", tt.partner, map[string]any{"sub": "bob", "email": "bob@partner.example", "aud": "gatehouse-partner"})
	want(t, "partner callback", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	if out.Audit.Iss != tt.partner.URL || out.Audit.User != "bob" || out.Location != "/x" {
		t.Errorf("partner sign-in audit %+v, to %q", out.Audit, out.Location)
	}
	out = tt.handle(request(http.MethodGet, "/x", false, jar...))
	want(t, "partner user", out, Allow, 0, ResultAllow, ReasonNone)
	if v, _ := out.upstream("X-Remote-User"); v != "bob@partner.example" || out.Audit.Iss != tt.partner.URL {
		t.Errorf("partner user: header %q, audit %+v", v, out.Audit)
	}
	sess, _ := tt.cookies.read(request(http.MethodGet, "/x", false, jar...), tt.clock.now())
	if sess == nil || sess.IdP != "partner" || sess.Issuer != tt.partner.URL || tt.user(sess) != (grants.User{Iss: tt.partner.URL, Sub: "bob"}) {
		t.Errorf("partner session %+v", sess)
	}
	out, _ = tt.signInAt(t, "corp", tt.corp, map[string]any{"sub": "alice"})
	want(t, "corp callback", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	if out.Audit.Iss != tt.corp.URL {
		t.Errorf("corp sign-in audit %+v", out.Audit)
	}

	// Logout ends the session at the session's IdP.
	out = tt.handle(request(http.MethodPost, "/.gatehouse/logout", true, jar...))
	if out.Reason != ReasonIdPLogout || !strings.HasPrefix(out.Location, tt.partner.URL+"/logout?") ||
		!strings.Contains(out.Location, "client_id=gatehouse-partner") || !strings.Contains(out.Location, "id_token_hint=") {
		t.Errorf("partner logout: %s to %q", out.Reason, out.Location)
	}

	// Readiness names each IdP.
	if r := tt.Ready(context.Background(), tt.clock.now()); r.IdP["corp"] != "up" || r.IdP["partner"] != "up" || len(r.IdP) != 2 {
		t.Errorf("readiness %+v", r)
	}
}

// TestChooseIdPHostile: what /.gatehouse/login makes of idp and
// login_hint. Whatever they hold, the browser goes to a configured IdP
// with at most a login_hint that IdP may sign in, or to the sign-in
// page; never to an error that names the configuration.
func TestChooseIdPHostile(t *testing.T) {
	tt := newTwoIdPGate(t, nil)
	long := strings.Repeat("a", 10000)
	for _, c := range []struct {
		name, query string
		to, hint    string // the IdP (name) and login_hint sent; "" for the sign-in page
		reason      Reason
	}{
		{"nothing", "", "", "", ReasonChooseIdP},
		{"empty idp", "idp=", "", "", ReasonChooseIdP},
		{"idp", "idp=partner", "partner", "", ReasonNone},
		{"unknown idp", "idp=nope", "", "", ReasonIdPUnknown},
		{"idp in another case", "idp=CORP", "", "", ReasonIdPUnknown},
		{"idp twice", "idp=corp&idp=partner", "", "", ReasonIdPUnknown},
		{"unicode idp", "idp=c%C3%B6rp", "", "", ReasonIdPUnknown},
		{"homoglyph idp", "idp=%D1%81orp", "", "", ReasonIdPUnknown},
		{"NUL in idp", "idp=corp%00", "", "", ReasonIdPUnknown},
		{"very long idp", "idp=" + long, "", "", ReasonIdPUnknown},
		{"an issuer as idp", "idp=" + url.QueryEscape(tt.corp.URL), "", "", ReasonIdPUnknown},
		{"hint chooses", "login_hint=bob%40partner.example", "partner", "bob@partner.example", ReasonNone},
		{"hint domain in capitals", "login_hint=alice%40EXAMPLE.com", "corp", "alice@example.com", ReasonNone},
		{"unknown domain", "login_hint=eve%40unknown.example", "", "", ReasonLoginHintUnknown},
		{"subdomain", "login_hint=alice%40sub.example.com", "", "", ReasonLoginHintUnknown},
		{"parent domain", "login_hint=bob%40example", "", "", ReasonLoginHintUnknown},
		{"not an email", "login_hint=alice", "", "", ReasonLoginHintUnknown},
		{"two at signs", "login_hint=eve%40example.com%40partner.example", "", "", ReasonLoginHintUnknown},
		{"display name", "login_hint=Eve+%3Ceve%40example.com%3E", "", "", ReasonLoginHintUnknown},
		{"CRLF", "login_hint=alice%40example.com%0d%0aX-Evil:+1", "", "", ReasonLoginHintUnknown},
		{"unicode local part", "login_hint=%C3%A5lice%40example.com", "", "", ReasonLoginHintUnknown},
		{"unicode domain", "login_hint=alice%40ex%C3%A4mple.com", "", "", ReasonLoginHintUnknown},
		{"very long hint", "login_hint=" + long + "%40example.com", "", "", ReasonLoginHintUnknown},
		{"hint twice", "login_hint=alice%40example.com&login_hint=bob%40partner.example", "", "", ReasonLoginHintUnknown},
		{"idp and its hint", "idp=corp&login_hint=alice%40example.com", "corp", "alice@example.com", ReasonNone},
		{"idp and another's hint", "idp=corp&login_hint=bob%40partner.example", "", "", ReasonLoginHintMismatch},
		{"partner and a corp hint", "idp=partner&login_hint=alice%40example.com", "", "", ReasonLoginHintMismatch},
		{"idp and a hint of no one's domain", "idp=partner&login_hint=eve%40unknown.example", "", "", ReasonLoginHintMismatch},
		{"idp and a bad hint", "idp=partner&login_hint=nobody", "", "", ReasonLoginHintMismatch},
		{"idp and an empty hint", "idp=partner&login_hint=", "partner", "", ReasonNone},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := tt.handle(request(http.MethodGet, "/.gatehouse/login?rd=/r&"+c.query, true))
			if c.to == "" {
				status, kind := http.StatusBadRequest, BadRequest
				if c.reason == ReasonChooseIdP {
					status, kind = http.StatusOK, Page
				}
				want(t, c.name, out, kind, status, ResultInternal, c.reason)
				if out.Answer == nil || out.Answer.Page != "signin" {
					t.Fatalf("not the sign-in page: %+v", out.Answer)
				}
				b, _ := json.Marshal(out.Answer.JSON)
				for _, secret := range []string{tt.corp.URL, tt.partner.URL, "gatehouse-partner", "partner.example"} {
					if strings.Contains(string(b), secret) || strings.Contains(out.Answer.Message, secret) {
						t.Errorf("the answer names %q: %s", secret, b)
					}
				}
				if page := out.Answer.Data.(*SignInPage); len(page.Typed) > maxLoginHint || strings.ContainsAny(page.Typed, "\r\n\x00") {
					t.Errorf("typed email shown again as %q", page.Typed)
				}
				return
			}
			want(t, c.name, out, Login, http.StatusFound, ResultLogin, Reason(authn.ReasonNoCookie))
			idp := map[string]*testIdP{"corp": tt.corp, "partner": tt.partner}[c.to]
			u, err := url.Parse(out.Location)
			if err != nil || !strings.HasPrefix(out.Location, idp.URL+"/auth?") {
				t.Fatalf("sent to %q, want %s", out.Location, c.to)
			}
			if got, ok := u.Query()["login_hint"]; c.hint == "" && ok || c.hint != "" && (len(got) != 1 || got[0] != c.hint) {
				t.Errorf("login_hint %q, want %q", got, c.hint)
			}
		})
	}

	// The message says which domain is not served, and nothing else.
	out := tt.handle(request(http.MethodGet, "/.gatehouse/login?login_hint=eve%40Unknown.Example", true))
	if !strings.Contains(out.Answer.Message, "addresses at unknown.example.") || out.Answer.Data.(*SignInPage).Typed != "eve@Unknown.Example" {
		t.Errorf("unknown domain: %q %+v", out.Answer.Message, out.Answer.Data)
	}

	// With one IdP there is nothing to choose: an unknown name is
	// ignored, and a hint it may not sign in is dropped.
	one := newTestGate(t, func(c *Config) { c.IdPs = nil })
	for q, hint := range map[string]string{"idp=nope": "", "idp=nope&login_hint=a%40b.example": "a@b.example", "login_hint=x": ""} {
		out := one.handle(request(http.MethodGet, "/.gatehouse/login?"+q, true))
		u, _ := url.Parse(out.Location)
		if out.Kind != Login || !strings.HasPrefix(out.Location, one.idp.URL+"/auth?") || u.Query().Get("login_hint") != hint {
			t.Errorf("one IdP, %s: %s %q", q, out.Kind, out.Location)
		}
	}
}

// FuzzChooseIdP: whatever idp and login_hint hold, chooseIdP never
// panics, chooses a configured IdP or none (with a reason), and passes
// on only a plain address that IdP may sign in.
func FuzzChooseIdP(f *testing.F) {
	for _, s := range [][2]string{{"corp", ""}, {"", "bob@partner.example"}, {"partner", "alice@example.com"}, {"c\u00f6rp", "a@b@c"}, {"", "alice@EXAMPLE.com\r\n"}} {
		f.Add(s[0], s[1])
	}
	tt := newTwoIdPGate(f, nil)
	f.Fuzz(func(t *testing.T, name, hint string) {
		for _, args := range [][2][]string{{{name}, {hint}}, {{name}, nil}, {nil, {hint}}, {{name, name}, {hint}}} {
			p, sent, why := tt.chooseIdP(args[0], args[1])
			if p == nil {
				if sent != "" || why == ReasonNone {
					t.Fatalf("no IdP, hint %q, reason %q", sent, why)
				}
				continue
			}
			if tt.idpNamed(p.Name) != p || why != ReasonNone {
				t.Fatalf("chose %q (%s)", p.Name, why)
			}
			if sent == "" {
				continue
			}
			if e, err := authn.ParseEmail(sent); err != nil || e != sent || !p.allows(sent) {
				t.Fatalf("passed %q on to %s", sent, p.Name)
			}
		}
	})
}

// TestMixUp: an answer is taken only from the IdP its sign-in was sent
// to, and its code is exchanged only with that IdP's client.
func TestMixUp(t *testing.T) {
	tt := newTwoIdPGate(t, func(_ *Config, corp, _ *testIdP) { corp.issResponse = true })
	// start begins a sign-in at corp; the IdP's answer is then forged.
	start := func() (Outcome, url.Values) {
		out := tt.handle(request(http.MethodGet, "/.gatehouse/login?idp=corp", true))
		u, err := url.Parse(out.Location)
		if err != nil || !strings.HasPrefix(out.Location, tt.corp.URL) {
			t.Fatalf("login at corp: %q", out.Location)
		}
		return out, u.Query()
	}
	callback := func(st Outcome, q url.Values, code, iss string) Outcome {
		target := "/.gatehouse/callback?code=" + url.QueryEscape(code) + "&state=" + url.QueryEscape(q.Get("state"))
		if iss != "" {
			target += "&iss=" + url.QueryEscape(iss)
		}
		return tt.handle(request(http.MethodGet, target, true, st.Cookies...))
	}
	partnerCode := func(q url.Values, claims map[string]any) string {
		// The partner's IdP (or whoever controls it) issues a code for
		// this sign-in: its nonce, its redirect URI.
		u, _ := url.Parse(tt.partner.signIn(t, tt.partner.URL+"/auth?"+q.Encode(), tt.clock.now(), claims))
		return u.Query().Get("code")
	}
	for _, c := range []struct {
		name   string
		answer func(q url.Values) (code, iss string)
		status int
		reason Reason
	}{
		{"the partner answers, naming itself", func(q url.Values) (string, string) {
			return partnerCode(q, nil), tt.partner.URL
		}, http.StatusBadRequest, ReasonIssuerMismatch},
		{"the partner answers, naming corp", func(q url.Values) (string, string) {
			return partnerCode(q, nil), tt.corp.URL // its code goes to corp's token endpoint, which does not know it
		}, http.StatusUnauthorized, "code_rejected"},
		{"the partner answers, naming no one", func(q url.Values) (string, string) {
			return partnerCode(q, nil), "" // corp always names itself
		}, http.StatusBadRequest, ReasonIssuerMissing},
		{"corp answers, iss of the partner", func(q url.Values) (string, string) {
			u, _ := url.Parse(tt.corp.signIn(t, tt.corp.URL+"/auth?"+q.Encode(), tt.clock.now(), nil))
			return u.Query().Get("code"), tt.partner.URL
		}, http.StatusBadRequest, ReasonIssuerMismatch},
		{"iss twice", func(q url.Values) (string, string) {
			u, _ := url.Parse(tt.corp.signIn(t, tt.corp.URL+"/auth?"+q.Encode(), tt.clock.now(), nil))
			return u.Query().Get("code"), tt.corp.URL + "&iss=" + url.QueryEscape(tt.corp.URL)
		}, http.StatusBadRequest, ReasonIssuerMismatch},
		{"corp's token names the partner", func(q url.Values) (string, string) {
			u, _ := url.Parse(tt.corp.signIn(t, tt.corp.URL+"/auth?"+q.Encode(), tt.clock.now(), map[string]any{"iss": tt.partner.URL}))
			return u.Query().Get("code"), tt.corp.URL
		}, http.StatusUnauthorized, "id_token_invalid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, q := start()
			code, iss := c.answer(q)
			if strings.Contains(iss, "&iss=") {
				first, _, _ := strings.Cut(iss, "&")
				out := tt.handle(request(http.MethodGet, "/.gatehouse/callback?code="+code+"&state="+url.QueryEscape(q.Get("state"))+"&iss="+url.QueryEscape(first)+"&iss="+url.QueryEscape(first), true, st.Cookies...))
				want(t, c.name, out, Deny, c.status, ResultLoginFailed, c.reason)
				return
			}
			out := callback(st, q, code, iss)
			want(t, c.name, out, Deny, c.status, ResultLoginFailed, c.reason)
			if out.cookie("__Host-gatehouse") != nil {
				t.Error("a session was made")
			}
		})
	}
	// The genuine answer works.
	st, q := start()
	u, _ := url.Parse(tt.corp.signIn(t, tt.corp.URL+"/auth?"+q.Encode(), tt.clock.now(), nil))
	want(t, "corp's own answer", callback(st, q, u.Query().Get("code"), tt.corp.URL), Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
}

// TestPartnerDomains: an IdP with domains signs in only verified
// addresses of those domains, so a partner cannot sign in the staff's.
func TestPartnerDomains(t *testing.T) {
	tt := newTwoIdPGate(t, nil)
	partner := func(claims map[string]any) map[string]any {
		claims["aud"] = "gatehouse-partner"
		if _, ok := claims["email_verified"]; !ok {
			claims["email_verified"] = true
		}
		return claims
	}
	for _, c := range []struct {
		name   string
		claims map[string]any
		ok     bool
	}{
		{"its own", partner(map[string]any{"sub": "bob", "email": "bob@partner.example"}), true},
		{"its own, in capitals", partner(map[string]any{"sub": "bob", "email": "bob@PARTNER.EXAMPLE"}), true},
		{"a staff address", partner(map[string]any{"sub": "mallory", "email": "alice@example.com"}), false},
		{"a staff address in capitals", partner(map[string]any{"sub": "mallory", "email": "alice@EXAMPLE.COM"}), false},
		{"a subdomain", partner(map[string]any{"sub": "mallory", "email": "m@sub.partner.example"}), false},
		{"its domain as a suffix", partner(map[string]any{"sub": "mallory", "email": "m@evilpartner.example"}), false},
		{"two addresses", partner(map[string]any{"sub": "mallory", "email": "alice@example.com@partner.example"}), false},
		{"its own, unverified", partner(map[string]any{"sub": "bob", "email": "bob@partner.example", "email_verified": false}), false},
		{"no email", partner(map[string]any{"sub": "bob", "email": nil}), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, _ := tt.signInAt(t, "partner", tt.partner, c.claims)
			if c.ok {
				want(t, c.name, out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
				return
			}
			want(t, c.name, out, Deny, http.StatusForbidden, ResultLoginFailed, ReasonDomainNotAllowed)
			if out.cookie("__Host-gatehouse") != nil || out.cookie("__Secure-gatehouse_idt") != nil {
				t.Error("a refused sign-in set a session")
			}
			if out.Audit.Iss != tt.partner.URL || out.Audit.User != c.claims["sub"] {
				t.Errorf("audit %+v", out.Audit)
			}
		})
	}
	// The staff's IdP signs in its own.
	out, _ := tt.signInAt(t, "corp", tt.corp, map[string]any{"sub": "alice", "email": "alice@example.com"})
	want(t, "corp", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
}

// TestSessionsOfTwoIdPs: the same subject at two IdPs is two users, and
// a session of one IdP never passes for the other's.
func TestSessionsOfTwoIdPs(t *testing.T) {
	tt := newTwoIdPGate(t, nil)
	ctx := context.Background()
	now := tt.clock.now()
	partnerAlice := grants.User{Iss: tt.partner.URL, Sub: "alice"}
	if _, err := tt.store.AddGrant(ctx, grants.Grant{User: partnerAlice, App: "payroll", Resource: "partner-portal", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	_, corpJar := tt.signInAt(t, "corp", tt.corp, map[string]any{"sub": "alice"})
	_, partnerJar := tt.signInAt(t, "partner", tt.partner, map[string]any{"sub": "alice", "email": "alice@partner.example", "aud": "gatehouse-partner"})
	out := tt.handle(request(http.MethodGet, "/x", false, corpJar...))
	if out.Kind != Allow || len(out.Audit.Grants) != 0 || out.Audit.Iss != tt.corp.URL {
		t.Errorf("corp's alice: %s, grants %v, iss %q", out.Kind, out.Audit.Grants, out.Audit.Iss)
	}
	out = tt.handle(request(http.MethodGet, "/x", false, partnerJar...))
	if out.Kind != Allow || len(out.Audit.Grants) != 1 {
		t.Errorf("the partner's alice: %s, grants %v", out.Kind, out.Audit.Grants)
	}

	// De-provisioning the partner's alice ends her sessions, not the
	// staff's alice's.
	tt.clock.add(time.Second)
	tt.cfg.Grants.NoteUserRevoked(partnerAlice, tt.clock.now())
	want(t, "revoked partner alice", tt.handle(request(http.MethodGet, "/x", false, partnerJar...)), Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonRevoked))
	want(t, "corp alice", tt.handle(request(http.MethodGet, "/x", false, corpJar...)), Allow, 0, ResultAllow, ReasonNone)

	// A session sealed with one IdP's keys that names the other's
	// issuer opens as nobody's.
	forged := &authn.Session{ID: "f1", Subject: "alice", Issuer: tt.partner.URL, IdP: "corp", Created: tt.clock.now().Unix(), LastSeen: tt.clock.now().Unix()}
	want(t, "a corp session naming the partner", tt.handle(request(http.MethodGet, "/x", false, tt.cookie(t, forged))),
		Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonInvalid))
	forged.Issuer, forged.IdP = tt.corp.URL, "partner"
	want(t, "a partner session naming corp", tt.handle(request(http.MethodGet, "/x", false, tt.cookie(t, forged))),
		Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonInvalid))
	forged.IdP = "nobody"
	if _, err := tt.cookies.sessionCookie(forged, tt.clock.now()); err == nil {
		t.Error("sealed a session of an IdP that is not configured")
	}

	// Without the partner's IdP (same app, same secrets), its sessions
	// open nowhere; the staff's still do, and sessions made before IdPs
	// had names open as the one IdP's.
	corpOnly := newTestGate(t, func(c *Config) {
		c.Issuer, c.ClientID, c.IdP = tt.corp.URL, "gatehouse", tt.idps[0].IdP
	})
	corpOnly.clock = tt.clock
	want(t, "a partner session, partner gone", corpOnly.handle(request(http.MethodGet, "/x", false, partnerJar...)),
		Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonInvalid))
	out = corpOnly.handle(request(http.MethodGet, "/x", false, corpJar...))
	if out.Kind != Allow || out.Audit.Iss != tt.corp.URL {
		t.Errorf("a corp session, after the partner left: %s %s %+v", out.Kind, out.Reason, out.Audit)
	}
	old := &authn.Session{ID: "o1", Subject: "carol", Created: tt.clock.now().Unix(), LastSeen: tt.clock.now().Unix()}
	out = corpOnly.handle(request(http.MethodGet, "/x", false, corpOnly.cookie(t, old)))
	if out.Kind != Allow || out.Audit.Iss != tt.corp.URL || out.Audit.User != "carol" {
		t.Errorf("a session of before: %s %s %+v", out.Kind, out.Reason, out.Audit)
	}
}

// TestStepUpAtTheSessionsIdP: a step-up asks the IdP the user signed in
// with, and only that IdP's answer for the same user upgrades it.
func TestStepUpAtTheSessionsIdP(t *testing.T) {
	tt := newTwoIdPGate(t, func(c *Config, _, _ *testIdP) {
		c.StepUp = authn.StepUpRules{{Paths: globPaths{"/admin/*"}, Requirement: authn.Requirement{ACR: []string{"mfa"}}}}
	})
	_, jar := tt.signInAt(t, "partner", tt.partner, map[string]any{"sub": "bob", "email": "bob@partner.example", "aud": "gatehouse-partner"})
	start := tt.handle(request(http.MethodGet, "/admin/x", true, jar...))
	if start.Kind != StepUp || !strings.HasPrefix(start.Location, tt.partner.URL+"/auth?") {
		t.Fatalf("step-up sent to %q", start.Location)
	}
	u, _ := url.Parse(start.Location)
	jar = merge(jar, start.Cookies)

	// The staff's IdP answers for a user of the same subject: refused.
	cb, _ := url.Parse(tt.corp.signIn(t, tt.corp.URL+"/auth?"+u.Query().Encode(), tt.clock.now(), map[string]any{"sub": "bob", "acr": "mfa"}))
	out := tt.handle(request(http.MethodGet, cb.RequestURI(), true, jar...))
	want(t, "the staff's IdP answers the partner's step-up", out, Deny, http.StatusBadRequest, ResultLoginFailed, ReasonIssuerMismatch)

	start = tt.handle(request(http.MethodGet, "/admin/x", true, jar...))
	jar = merge(jar, start.Cookies)
	cb, _ = url.Parse(tt.partner.signIn(t, start.Location, tt.clock.now(), map[string]any{"sub": "bob", "acr": "mfa", "aud": "gatehouse-partner",
		"email": "bob@partner.example"}))
	out = tt.handle(request(http.MethodGet, cb.RequestURI(), true, jar...))
	want(t, "the partner's step-up", out, Redirect, http.StatusFound, ResultStepUpOK, ReasonNone)
}

// TestSupersededSignInKeepsItsIdP: a sign-in whose slot a newer one took
// restarts at the IdP it was sent to, not at the sign-in page.
func TestSupersededSignInKeepsItsIdP(t *testing.T) {
	tt := newTwoIdPGate(t, nil)
	first := tt.handle(request(http.MethodGet, "/.gatehouse/login?idp=partner&rd=/tab/a", true))
	jar := merge(nil, first.Cookies)
	for i := 0; ; i++ {
		if i == 100 {
			t.Fatal("100 sign-ins and none took the first one's slot")
		}
		newer := tt.handle(request(http.MethodGet, "/.gatehouse/login?idp=corp&rd=/tab/b", true, jar...))
		jar = merge(jar, newer.Cookies)
		if newer.Cookies[0].Name == first.Cookies[0].Name {
			break
		}
	}
	u, _ := url.Parse(tt.partner.signIn(t, first.Location, tt.clock.now(), map[string]any{"aud": "gatehouse-partner"}))
	out := tt.handle(request(http.MethodGet, u.RequestURI(), true, jar...))
	want(t, "superseded", out, Login, http.StatusFound, ResultLogin, ReasonLoginSuperseded)
	if out.Location != "/.gatehouse/login?idp=partner&rd=%2Ftab%2Fa" {
		t.Errorf("restart at %q", out.Location)
	}
}
