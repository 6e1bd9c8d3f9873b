package gate

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// tokenPolicy lets services with the orders:read scope read /orders, and
// people read anything but /orders.
const tokenPolicy = `package gatehouse

default decision := {"allow": false, "reason": "no"}

decision := {"allow": true} if {
	input.principal.kind == "service"
	input.principal.via == "token"
	"orders:read" in input.token.scopes
	input.token.client_id == "reporting"
	startswith(input.request.path_lower, "/orders")
}

decision := {"allow": true} if {
	input.principal.kind == "user"
	not startswith(input.request.path_lower, "/orders")
}
`

// bearerGate is the payroll gate accepting the test IdP's access tokens
// for https://api.example, with tokenPolicy and a step-up on /admin/*.
func bearerGate(t *testing.T, change func(*Config)) *testGate {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(tokenPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	engine, err := policies.NewEngine(dir, policies.Options{Query: policies.DefaultQuery, Timeout: time.Minute}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = engine.Close() })
	return newTestGate(t, func(c *Config) {
		c.Policy = engine
		c.Bearer = []*authn.BearerIssuer{{Discovery: c.IdP.Discovery, Audiences: []string{"https://api.example"}, GroupsClaim: "groups", Now: c.Now}}
		c.StepUp = authn.StepUpRules{{Paths: globPaths{"/admin/*", "/orders/secret/*"}, Requirement: authn.Requirement{ACR: []string{"urn:mfa"}}}}
		if change != nil {
			change(c)
		}
	})
}

// accessToken signs an RFC 9068 token of the test IdP: a service's
// (reporting) with claims merged over it.
func (tg *testGate) accessToken(t *testing.T, claims map[string]any) string {
	t.Helper()
	now := tg.clock.now()
	c := map[string]any{"iss": tg.idp.URL, "sub": "reporting", "client_id": "reporting", "aud": "https://api.example",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": "t-1", "scope": "orders:read"}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: testKey()}, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(c)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func bearerRequest(method, target string, auth ...string) *http.Request {
	r := request(method, target, false)
	for _, a := range auth {
		r.Header.Add("Authorization", a)
	}
	return r
}

// TestBearer: a verified token goes through the allow rules, grants,
// policy (principal and token in the input) and step-up rules; the
// upstream gets the identity headers and never the token; every failure
// is a 401/403 with RFC 6750's challenge, never a redirect or a cookie.
func TestBearer(t *testing.T) {
	tg := bearerGate(t, nil)
	service := tg.accessToken(t, nil)
	alice := tg.accessToken(t, map[string]any{"sub": "alice", "email": "alice@example.com", "email_verified": true, "acr": "urn:pwd"})

	out := tg.handle(bearerRequest(http.MethodGet, "/orders/7", "Bearer "+service))
	want(t, "a service reads orders", out, Allow, 0, ResultAllow, ReasonNone)
	if v, ok := out.upstream("X-Remote-User"); ok {
		t.Errorf("a service got an email header %q", v)
	}
	removed := false
	for _, h := range out.Upstream {
		if h.Name == "Authorization" && h.Values == nil {
			removed = true
		}
	}
	if !removed || len(out.Cookies) != 0 {
		t.Errorf("the token is not removed for the upstream (%v) or cookies were set (%d)", removed, len(out.Cookies))
	}
	if a := out.Audit; a.User != "reporting" || a.Token == nil || a.Token.Principal != "service" || a.Token.ClientID != "reporting" || a.Token.ID != "t-1" {
		t.Errorf("audit %+v %+v", a, a.Token)
	}
	want(t, "a service elsewhere", tg.handle(bearerRequest(http.MethodGet, "/payroll", "Bearer "+service)), Deny, http.StatusForbidden, ResultDeny, ReasonPolicyDeny)

	out = tg.handle(bearerRequest(http.MethodGet, "/payroll", "bearer "+alice))
	want(t, "alice's token (scheme in any case)", out, Allow, 0, ResultAllow, ReasonNone)
	if v, _ := out.upstream("X-Remote-User"); v != "alice@example.com" {
		t.Errorf("X-Remote-User = %q", v)
	}
	want(t, "alice's token on orders", tg.handle(bearerRequest(http.MethodGet, "/orders/1", "Bearer "+alice)), Deny, http.StatusForbidden, ResultDeny, ReasonPolicyDeny)

	// Step-up: a service can never give one; a person's token says what
	// is missing (RFC 9470).
	out = tg.handle(bearerRequest(http.MethodGet, "/admin/x", "Bearer "+alice))
	want(t, "alice's password token on /admin", out, Deny, http.StatusUnauthorized, ResultUnauthenticated, ReasonBearerStepUp)
	if h := out.Header.Get("WWW-Authenticate"); !strings.Contains(h, `error="insufficient_user_authentication"`) || !strings.Contains(h, `acr_values="urn:mfa"`) {
		t.Errorf("challenge %q", h)
	}
	mfa := tg.accessToken(t, map[string]any{"sub": "alice", "acr": "urn:mfa"})
	want(t, "alice's MFA token on /admin", tg.handle(bearerRequest(http.MethodGet, "/admin/x", "Bearer "+mfa)), Allow, 0, ResultAllow, ReasonNone)
	svcAdmin := tg.accessToken(t, map[string]any{"acr": "urn:mfa"})
	want(t, "a service on a step-up path", tg.handle(bearerRequest(http.MethodGet, "/orders/secret/x", "Bearer "+svcAdmin)), Deny, http.StatusForbidden, ResultDeny, ReasonStepUpNotPossible)

	// Refusals: 401 with the challenge, JSON, no redirect, no cookie.
	for _, c := range []struct {
		name   string
		auth   []string
		status int
		reason Reason
		code   string
	}{
		{"expired", []string{"Bearer " + tg.accessToken(t, map[string]any{"exp": tg.clock.now().Add(-time.Second).Unix()})}, 401, authn.BearerExpired, "invalid_token"},
		{"another audience", []string{"Bearer " + tg.accessToken(t, map[string]any{"aud": "https://other.example"})}, 401, authn.BearerAudience, "invalid_token"},
		{"an unknown issuer", []string{"Bearer " + tg.accessToken(t, map[string]any{"iss": "https://evil.example"})}, 401, authn.BearerIssuerUnknown, "invalid_token"},
		{"garbage", []string{"Bearer abc.def.ghi"}, 401, authn.BearerMalformed, "invalid_token"},
		{"two Authorization headers", []string{"Bearer " + service, "Bearer " + service}, 400, ReasonBearerRequest, "invalid_request"},
		{"Basic and Bearer", []string{"Basic YTpi", "Bearer " + service}, 400, ReasonBearerRequest, "invalid_request"},
		{"no token", []string{"Bearer "}, 400, ReasonBearerRequest, "invalid_request"},
		{"not a token68", []string{"Bearer a b"}, 400, ReasonBearerRequest, "invalid_request"},
		{"a quote in the token", []string{`Bearer a"b`}, 400, ReasonBearerRequest, "invalid_request"},
	} {
		r := bearerRequest(http.MethodGet, "/orders/1", c.auth...)
		r.Header.Set("Accept", "text/html") // even a browser gets no redirect
		out := tg.handle(r)
		if out.Status != c.status || out.Reason != c.reason || out.Location != "" || len(out.Cookies) != 0 {
			t.Errorf("%s: %d %s %q cookies %d, want %d %s", c.name, out.Status, out.Reason, out.Location, len(out.Cookies), c.status, c.reason)
			continue
		}
		if h := out.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, `Bearer error="`+c.code+`"`) || strings.Contains(h, service) {
			t.Errorf("%s: WWW-Authenticate %q", c.name, h)
		}
	}
	// Basic credentials are not Gatehouse's: the request goes on as one
	// without a session.
	want(t, "Basic only", tg.handle(bearerRequest(http.MethodGet, "/orders/1", "Basic YTpi")), Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonNoCookie))
}

// TestBearerRevocation: the token of a user de-provisioned after it was
// issued is refused, as their sessions are; a token issued after is not.
func TestBearerRevocation(t *testing.T) {
	tg := bearerGate(t, nil)
	old := tg.accessToken(t, map[string]any{"sub": "bob"})
	want(t, "bob's token", tg.handle(bearerRequest(http.MethodGet, "/x", "Bearer "+old)), Allow, 0, ResultAllow, ReasonNone)
	tg.clock.add(2 * time.Second)
	u := grants.User{Iss: tg.idp.URL, Sub: "bob"}
	if err := tg.store.RevokeUser(context.Background(), u, tg.clock.now()); err != nil {
		t.Fatal(err)
	}
	tg.cfg.Grants.Invalidate(u)
	out := tg.handle(bearerRequest(http.MethodGet, "/x", "Bearer "+old))
	want(t, "bob's token after de-provisioning", out, Deny, http.StatusUnauthorized, ResultUnauthenticated, ReasonBearerRevoked)
	tg.clock.add(2 * time.Second)
	fresh := tg.accessToken(t, map[string]any{"sub": "bob"})
	want(t, "bob's new token", tg.handle(bearerRequest(http.MethodGet, "/x", "Bearer "+fresh)), Allow, 0, ResultAllow, ReasonNone)
}

// TestBearerScopesAndPass: require_scopes refuses with 403
// insufficient_scope; pass_authorization keeps the header.
func TestBearerScopesAndPass(t *testing.T) {
	tg := bearerGate(t, func(c *Config) {
		c.Bearer[0].RequireScopes = []string{"orders:read"}
		c.PassAuthorization = true
	})
	out := tg.handle(bearerRequest(http.MethodGet, "/orders/1", "Bearer "+tg.accessToken(t, map[string]any{"scope": "orders:write"})))
	want(t, "missing scope", out, Deny, http.StatusForbidden, ResultDeny, authn.BearerScope)
	if h := out.Header.Get("WWW-Authenticate"); !strings.Contains(h, `error="insufficient_scope"`) {
		t.Errorf("challenge %q", h)
	}
	out = tg.handle(bearerRequest(http.MethodGet, "/orders/1", "Bearer "+tg.accessToken(t, nil)))
	want(t, "with the scope", out, Allow, 0, ResultAllow, ReasonNone)
	for _, h := range out.Upstream {
		if h.Name == "Authorization" {
			t.Error("pass_authorization: the header is still removed")
		}
	}
}

// TestNoBearerConfigured: without bearer blocks a token means nothing:
// the request is one without a session, as before.
func TestNoBearerConfigured(t *testing.T) {
	tg := newTestGate(t, nil)
	r := bearerRequest(http.MethodGet, "/x", "Bearer abc")
	want(t, "a token where none is accepted", tg.handle(r), Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonNoCookie))
}

// FuzzBearerHeader: whatever Authorization headers a client sends, a
// token is taken only from exactly one Bearer header, as one token68.
func FuzzBearerHeader(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer a.b.c", "Bearer ", "Basic YTpi", "Bearer a b", "Bearer a\"b", "Bearer ====", "BEARER x=="} {
		f.Add(s, "")
		f.Add(s, "Bearer second")
	}
	f.Fuzz(func(t *testing.T, first, second string) {
		r, _ := http.NewRequest(http.MethodGet, "https://app.example.com/", nil)
		r.Header["Authorization"] = []string{first}
		if second != "" {
			r.Header["Authorization"] = append(r.Header["Authorization"], second)
		}
		token, ok, bad := bearerToken(r)
		if ok && bad {
			t.Fatal("both a token and a bad header")
		}
		if ok && (second != "" || token == "" || !isToken68(token) || strings.ContainsAny(token, " \t\",")) {
			t.Fatalf("token %q taken from %q, %q", token, first, second)
		}
	})
}

// dpopProof signs a DPoP proof with key for method and htu carrying
// token, and returns it with the key's thumbprint.
func dpopProof(t *testing.T, key *ecdsa.PrivateKey, method, htu, token string) (proof, jkt string) {
	t.Helper()
	tp, _ := (&jose.JSONWebKey{Key: &key.PublicKey}).Thumbprint(crypto.SHA256)
	sum := sha256.Sum256([]byte(token))
	c := map[string]any{"jti": crand.Text(), "htm": method, "htu": htu, "iat": time.Now().Unix(), "ath": base64.RawURLEncoding.EncodeToString(sum[:])}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("dpop+jwt").WithHeader("jwk", jose.JSONWebKey{Key: &key.PublicKey}))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(c)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out, base64.RawURLEncoding.EncodeToString(tp)
}

// TestBearerDPoP: a token bound to a key needs the DPoP scheme and one
// fresh proof of that key for this very request, used once; an unbound
// token cannot claim the scheme, and dpop required refuses it.
func TestBearerDPoP(t *testing.T) {
	tg := bearerGate(t, nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	_, jkt := dpopProof(t, key, "GET", "https://app.example.com/orders/1", "x")
	bound := tg.accessToken(t, map[string]any{"cnf": map[string]string{"jkt": jkt}})
	dpopReq := func(method, target, scheme string, proofs ...string) *http.Request {
		r := bearerRequest(method, target, scheme+" "+bound)
		for _, p := range proofs {
			r.Header.Add("DPoP", p)
		}
		return r
	}
	proof, _ := dpopProof(t, key, "GET", "https://app.example.com/orders/1", bound)
	out := tg.handle(dpopReq(http.MethodGet, "/orders/1", "DPoP", proof))
	want(t, "a bound token with its proof", out, Allow, 0, ResultAllow, ReasonNone)
	out = tg.handle(dpopReq(http.MethodGet, "/orders/1", "DPoP", proof))
	want(t, "the same proof again", out, Deny, http.StatusUnauthorized, ResultUnauthenticated, authn.DPoPReplayed)
	if h := out.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, `DPoP error="invalid_dpop_proof"`) || !strings.Contains(h, "algs=") {
		t.Errorf("challenge %q", h)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	stolen, _ := dpopProof(t, other, "GET", "https://app.example.com/orders/1", bound)
	wrongURL, _ := dpopProof(t, key, "GET", "https://app.example.com/orders/2", bound)
	wrongMethod, _ := dpopProof(t, key, "POST", "https://app.example.com/orders/1", bound)
	another, _ := dpopProof(t, key, "GET", "https://app.example.com/orders/1", bound)
	for _, c := range []struct {
		name   string
		r      *http.Request
		reason string
	}{
		{"a bound token sent as Bearer", dpopReq(http.MethodGet, "/orders/1", "Bearer"), authn.DPoPMissing},
		{"a bound token sent as Bearer with a proof", dpopReq(http.MethodGet, "/orders/1", "Bearer", another), authn.DPoPMissing},
		{"no proof", dpopReq(http.MethodGet, "/orders/1", "DPoP"), authn.DPoPMissing},
		{"two proofs", dpopReq(http.MethodGet, "/orders/1", "DPoP", another, another), authn.DPoPMissing},
		{"a proof of another key", dpopReq(http.MethodGet, "/orders/1", "DPoP", stolen), authn.DPoPKey},
		{"a proof for another URL", dpopReq(http.MethodGet, "/orders/1", "DPoP", wrongURL), authn.DPoPMismatch},
		{"a proof for another method", dpopReq(http.MethodGet, "/orders/1", "DPoP", wrongMethod), authn.DPoPMismatch},
		{"an unbound token sent as DPoP", bearerRequest(http.MethodGet, "/orders/1", "DPoP "+tg.accessToken(t, nil)), authn.DPoPUnbound},
	} {
		out := tg.handle(c.r)
		if out.Status != http.StatusUnauthorized || string(out.Reason) != c.reason {
			t.Errorf("%s: %d %s, want 401 %s", c.name, out.Status, out.Reason, c.reason)
		}
	}
	// dpop required: a plain bearer token is refused.
	req := bearerGate(t, func(c *Config) { c.Bearer[0].DPoPRequired = true })
	out = req.handle(bearerRequest(http.MethodGet, "/orders/1", "Bearer "+req.accessToken(t, nil)))
	want(t, "an unbound token where DPoP is required", out, Deny, http.StatusUnauthorized, ResultUnauthenticated, authn.DPoPUnbound)
}

// TestChallengeQuoting: a description naming what the client sent is one
// quoted-string, whatever it holds, so it can never add parameters to
// the challenge.
func TestChallengeQuoting(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:                       `Bearer error="invalid_token", error_description="plain"`,
		`tokens signed with "x" fail`: `Bearer error="invalid_token", error_description="tokens signed with \"x\" fail"`,
		`a\", error="forged`:          `Bearer error="invalid_token", error_description="a\\\", error=\"forged"`,
		"line\r\nSet-Cookie: x=1\x7f": `Bearer error="invalid_token", error_description="lineSet-Cookie: x=1"`,
	} {
		if got := challenge("Bearer", "invalid_token", in); got != want {
			t.Errorf("challenge(%q) =\n %s\nwant\n %s", in, got, want)
		}
	}
	// A DPoP proof naming a hostile algorithm gets a well-formed challenge.
	tg := bearerGate(t, nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	_, jkt := dpopProof(t, key, "GET", "https://app.example.com/orders/1", "x")
	bound := tg.accessToken(t, map[string]any{"cnf": map[string]string{"jkt": jkt}})
	hostile := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"x\", error=\"y","typ":"dpop+jwt"}`)) + ".e30.c2ln"
	r := bearerRequest(http.MethodGet, "/orders/1", "DPoP "+bound)
	r.Header.Set("DPoP", hostile)
	out := tg.handle(r)
	h := out.Header.Get("WWW-Authenticate")
	if out.Status != http.StatusUnauthorized || !strings.HasPrefix(h, `DPoP error="invalid_dpop_proof", error_description="`) ||
		!strings.Contains(h, `signed with \"x\\\", error=\\\"y\" are not accepted", algs="`) {
		t.Errorf("%d %s", out.Status, h)
	}
}
