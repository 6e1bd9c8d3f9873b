package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// logoutClaimsFor are the claims of a good logout token from issuer to
// the client "gatehouse", issued at now.
func logoutClaimsFor(issuer string, now time.Time) map[string]any {
	return map[string]any{
		"iss": issuer, "aud": "gatehouse", "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": "jti-" + rand.Text(), "sub": "alice", "sid": "idp-session-1",
		"events": map[string]any{BackchannelLogoutEvent: map[string]any{}},
	}
}

// signLogout signs claims (any JSON value) with key, the algorithm alg,
// and the header's typ and kid ("" leaves one out; typ "-" too).
func signLogout(t testing.TB, key any, alg jose.SignatureAlgorithm, typ, kid string, claims any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if typ != "" && typ != "-" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLogoutTokenVerify: a logout token is accepted only when every
// check of Back-Channel Logout 1.0 (section 2.6) holds; each hostile
// token is refused with its own reason.
func TestLogoutTokenVerify(t *testing.T) {
	f := newFakeIdP(t)
	now := time.Now().Truncate(time.Second)
	v := &LogoutVerifier{Discovery: NewDiscovery(f.URL, f.Client()), ClientID: "gatehouse", Now: func() time.Time { return now }}
	ctx := context.Background()
	good := func(change func(map[string]any)) map[string]any {
		c := logoutClaimsFor(f.URL, now)
		if change != nil {
			change(c)
		}
		return c
	}
	rs := func(claims any) string { return signLogout(t, f.key, jose.RS256, "logout+jwt", "k1", claims) }
	pubDER, _ := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	valid := rs(good(nil))
	parts := strings.Split(valid, ".")
	otherPayload := strings.Split(rs(good(func(c map[string]any) { c["sub"] = "bob" })), ".")[1]

	cases := []struct {
		name  string
		token string
		want  LogoutReason // "" accepts
	}{
		{"sid and sub", valid, ""},
		{"sid only", rs(good(func(c map[string]any) { delete(c, "sub") })), ""},
		{"sub only", rs(good(func(c map[string]any) { delete(c, "sid") })), ""},
		{"aud a list naming the client", rs(good(func(c map[string]any) { c["aud"] = []string{"other", "gatehouse"} })), ""},
		{"typ JWT", signLogout(t, f.key, jose.RS256, "JWT", "k1", good(nil)), ""},
		{"typ application/logout+jwt", signLogout(t, f.key, jose.RS256, "application/logout+jwt", "k1", good(nil)), ""},
		{"no typ", signLogout(t, f.key, jose.RS256, "-", "k1", good(nil)), ""},
		{"no kid", signLogout(t, f.key, jose.RS256, "logout+jwt", "", good(nil)), ""},
		{"no exp", rs(good(func(c map[string]any) { delete(c, "exp") })), ""},
		{"iat 4 s ahead", rs(good(func(c map[string]any) { c["iat"] = now.Add(4 * time.Second).Unix() })), ""},
		{"events with more members", rs(good(func(c map[string]any) {
			c["events"] = map[string]any{BackchannelLogoutEvent: map[string]any{"x": 1}, "urn:other": "y"}
		})), ""},

		{"over 16 KiB", rs(good(func(c map[string]any) { c["pad"] = strings.Repeat("x", 17<<10) })), LogoutTooLarge},
		{"empty", "", LogoutMalformed},
		{"two parts", parts[0] + "." + parts[1], LogoutMalformed},
		{"four parts", valid + ".x", LogoutMalformed},
		{"JSON serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, LogoutMalformed},
		{"header not base64url", "%%%." + parts[1] + "." + parts[2], LogoutMalformed},
		{"header not an object", b64([]string{"RS256"}) + "." + parts[1] + "." + parts[2], LogoutMalformed},
		{"alg none", b64(map[string]string{"alg": "none", "typ": "logout+jwt"}) + "." + parts[1] + ".", LogoutAlg},
		{"alg none, any case", b64(map[string]string{"alg": "None"}) + "." + parts[1] + "." + parts[2], LogoutAlg},
		{"no alg", b64(map[string]string{"typ": "logout+jwt", "kid": "k1"}) + "." + parts[1] + "." + parts[2], LogoutAlg},
		{"HS256 keyed with the public key", signLogout(t, pubDER, jose.HS256, "logout+jwt", "k1", good(nil)), LogoutAlg},
		{"RS512, which the issuer does not use", signLogout(t, f.key, jose.RS512, "logout+jwt", "k1", good(nil)), LogoutAlg},
		{"ES256, which the issuer does not use", signLogout(t, ecKey, jose.ES256, "logout+jwt", "k1", good(nil)), LogoutAlg},
		{"typ at+jwt", signLogout(t, f.key, jose.RS256, "at+jwt", "k1", good(nil)), LogoutTyp},
		{"typ secevent+jwt", signLogout(t, f.key, jose.RS256, "secevent+jwt", "k1", good(nil)), LogoutTyp},
		{"a critical header", b64(map[string]any{"alg": "RS256", "crit": []string{"exp"}, "exp": 1}) + "." + parts[1] + "." + parts[2], LogoutMalformed},
		{"another key under the issuer's kid", signLogout(t, f.otherKey, jose.RS256, "logout+jwt", "k1", good(nil)), LogoutSignature},
		{"an unknown kid", signLogout(t, f.otherKey, jose.RS256, "logout+jwt", "k9", good(nil)), LogoutSignature},
		{"another token's claims under this signature", parts[0] + "." + otherPayload + "." + parts[2], LogoutSignature},
		{"no signature", parts[0] + "." + parts[1] + ".", LogoutSignature},
		{"claims not an object", rs([]string{"alice"}), LogoutMalformed},
		{"claims null", rs(nil), LogoutMalformed},
		{"iss another IdP", rs(good(func(c map[string]any) { c["iss"] = "https://evil.example" })), LogoutIssuer},
		{"iss with a trailing slash", rs(good(func(c map[string]any) { c["iss"] = f.URL + "/" })), LogoutIssuer},
		{"iss a list", rs(good(func(c map[string]any) { c["iss"] = []string{f.URL} })), LogoutIssuer},
		{"no iss", rs(good(func(c map[string]any) { delete(c, "iss") })), LogoutIssuer},
		{"aud another client", rs(good(func(c map[string]any) { c["aud"] = "other" })), LogoutAudience},
		{"aud a list without the client", rs(good(func(c map[string]any) { c["aud"] = []string{"other"} })), LogoutAudience},
		{"aud the client, differently cased", rs(good(func(c map[string]any) { c["aud"] = "Gatehouse" })), LogoutAudience},
		{"no aud", rs(good(func(c map[string]any) { delete(c, "aud") })), LogoutAudience},
		{"no iat", rs(good(func(c map[string]any) { delete(c, "iat") })), LogoutIAT},
		{"iat a string", rs(good(func(c map[string]any) { c["iat"] = "now" })), LogoutIAT},
		{"iat negative", rs(good(func(c map[string]any) { c["iat"] = -1 })), LogoutIAT},
		{"iat 10 s ahead", rs(good(func(c map[string]any) { c["iat"] = now.Add(10 * time.Second).Unix() })), LogoutIAT},
		{"iat a day ahead", rs(good(func(c map[string]any) { c["iat"] = now.Add(24 * time.Hour).Unix() })), LogoutIAT},
		{"iat 3 minutes ago (exp later)", rs(good(func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(-3*time.Minute).Unix(), now.Add(time.Hour).Unix()
		})), LogoutIAT},
		{"iat a year ago, no exp", rs(good(func(c map[string]any) { c["iat"] = now.AddDate(-1, 0, 0).Unix(); delete(c, "exp") })), LogoutIAT},
		{"exp 10 s ago", rs(good(func(c map[string]any) { c["exp"] = now.Add(-10 * time.Second).Unix() })), LogoutExpired},
		{"exp a string", rs(good(func(c map[string]any) { c["exp"] = "later" })), LogoutMalformed},
		{"exp null", rs(good(func(c map[string]any) { c["exp"] = nil })), LogoutMalformed},
		{"no events", rs(good(func(c map[string]any) { delete(c, "events") })), LogoutEvents},
		{"events a string", rs(good(func(c map[string]any) { c["events"] = BackchannelLogoutEvent })), LogoutEvents},
		{"events a list", rs(good(func(c map[string]any) { c["events"] = []string{BackchannelLogoutEvent} })), LogoutEvents},
		{"events without the member", rs(good(func(c map[string]any) { c["events"] = map[string]any{"urn:other": map[string]any{}} })), LogoutEvents},
		{"the member a string", rs(good(func(c map[string]any) { c["events"] = map[string]any{BackchannelLogoutEvent: "yes"} })), LogoutEvents},
		{"the member null", rs(good(func(c map[string]any) { c["events"] = map[string]any{BackchannelLogoutEvent: nil} })), LogoutEvents},
		{"the member a list", rs(good(func(c map[string]any) { c["events"] = map[string]any{BackchannelLogoutEvent: []any{}} })), LogoutEvents},
		{"a nonce (an ID token)", rs(good(func(c map[string]any) { c["nonce"] = "n-0S6_WzA2Mj" })), LogoutNonce},
		{"a null nonce", rs(good(func(c map[string]any) { c["nonce"] = nil })), LogoutNonce},
		{"neither sid nor sub", rs(good(func(c map[string]any) { delete(c, "sid"); delete(c, "sub") })), LogoutSubject},
		{"empty sid, no sub", rs(good(func(c map[string]any) { c["sid"] = ""; delete(c, "sub") })), LogoutSubject},
		{"sid a number", rs(good(func(c map[string]any) { c["sid"] = 42 })), LogoutSubject},
		{"sub null", rs(good(func(c map[string]any) { c["sub"] = nil })), LogoutSubject},
		{"sub with a newline", rs(good(func(c map[string]any) { c["sub"] = "alice\nadmin" })), LogoutSubject},
		{"sid over 255 bytes", rs(good(func(c map[string]any) { c["sid"] = strings.Repeat("s", 256) })), LogoutSubject},
		{"no jti", rs(good(func(c map[string]any) { delete(c, "jti") })), LogoutJTI},
		{"empty jti", rs(good(func(c map[string]any) { c["jti"] = "" })), LogoutJTI},
		{"jti a number", rs(good(func(c map[string]any) { c["jti"] = 7 })), LogoutJTI},
		{"jti over 255 bytes", rs(good(func(c map[string]any) { c["jti"] = strings.Repeat("j", 256) })), LogoutJTI},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := v.Verify(ctx, c.token)
			var le *LogoutTokenError
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want == "":
				if tok.Issuer != f.URL || tok.JTI == "" || (tok.SID == "" && tok.Subject == "") || !tok.AcceptedUntil().After(now) {
					t.Errorf("accepted as %+v", tok)
				}
			case !errors.As(err, &le):
				t.Fatalf("accepted or not refused as a token (%v), want %s", err, c.want)
			case le.Reason != c.want:
				t.Errorf("refused as %s (%s), want %s", le.Reason, le.Msg, c.want)
			}
			if err != nil && strings.Contains(err.Error(), c.token[:min(len(c.token), 40)]) && c.token != "" {
				t.Errorf("the error repeats the token: %v", err)
			}
		})
	}
	if n := f.jwksHits.Load(); n > 2 {
		t.Errorf("the key set was fetched %d times: forged kids must not make Gatehouse hammer the IdP", n)
	}

	// What the accepted token says.
	tok, err := v.Verify(ctx, valid)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Subject != "alice" || tok.SID != "idp-session-1" || !tok.IssuedAt.Equal(now) || !tok.Expires.Equal(now.Add(2*time.Minute)) {
		t.Errorf("token: %+v", tok)
	}
	// Its jti is kept as long as it could be accepted: exp (plus the skew)
	// or 2 minutes after iat, whichever comes first.
	if got := tok.AcceptedUntil(); !got.Equal(now.Add(2 * time.Minute)) {
		t.Errorf("AcceptedUntil = +%s", got.Sub(now))
	}
	short := &LogoutToken{IssuedAt: now, Expires: now.Add(30 * time.Second)}
	if got := short.AcceptedUntil(); !got.Equal(now.Add(30*time.Second + reauthSkew)) {
		t.Errorf("AcceptedUntil with exp in 30 s = +%s", got.Sub(now))
	}
}

// TestLogoutTokenIdPDown: an IdP whose discovery cannot be read is an
// outage (ErrProviderUnavailable), not a refused token; and a token too
// large or malformed is refused before the IdP is asked.
func TestLogoutTokenIdPDown(t *testing.T) {
	f := newFakeIdP(t)
	url := f.URL
	f.Close()
	v := &LogoutVerifier{Discovery: NewDiscovery(url, http.DefaultClient), ClientID: "gatehouse"}
	tok := signLogout(t, f.key, jose.RS256, "logout+jwt", "k1", logoutClaimsFor(url, time.Now()))
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrProviderUnavailable) {
		t.Errorf("with the IdP down: %v", err)
	}
	var le *LogoutTokenError
	if _, err := v.Verify(context.Background(), "not.a-token"); !errors.As(err, &le) || le.Reason != LogoutMalformed {
		t.Errorf("a malformed token with the IdP down: %v", err)
	}
}

// fuzzLogout is the fixed issuer, key and time the fuzz target checks
// tokens against, without any network.
var fuzzLogout = sync.OnceValue(func() (f struct {
	key    *rsa.PrivateKey
	checks logoutChecks
	now    time.Time
}) {
	f.key, _ = rsa.GenerateKey(rand.Reader, 2048)
	f.now = time.Unix(1_795_597_200, 0)
	keys := &KeySet{every: time.Hour, last: time.Now(), keys: []jose.JSONWebKey{{Key: &f.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}}
	f.checks = logoutChecks{issuer: "https://idp.example", clientID: "gatehouse", algs: []string{"RS256"}, keys: keys}
	return f
})

// FuzzLogoutToken: any input is refused or accepted without panicking,
// never reaches the network, and what is accepted satisfies every
// check (its signature verified, so the claims are one of the seeds').
func FuzzLogoutToken(f *testing.F) {
	fz := fuzzLogout()
	c := logoutClaimsFor("https://idp.example", fz.now)
	c["jti"] = "jti-1"
	f.Add(signLogout(f, fz.key, jose.RS256, "logout+jwt", "k1", c))
	noSub := maps.Clone(c)
	delete(noSub, "sub")
	f.Add(signLogout(f, fz.key, jose.RS256, "JWT", "k1", noSub))
	withNonce := maps.Clone(c)
	withNonce["nonce"] = "n"
	f.Add(signLogout(f, fz.key, jose.RS256, "logout+jwt", "k1", withNonce))
	f.Add(b64(map[string]string{"alg": "none"}) + "." + b64(c) + ".")
	f.Add("eyJhbGciOiJSUzI1NiJ9.e30.")
	f.Add(`{"payload":"e30","signatures":[]}`)
	f.Fuzz(func(t *testing.T, raw string) {
		hdr, err := readLogoutHeader(raw)
		if err != nil {
			return
		}
		tok, err := fz.checks.verify(context.Background(), raw, hdr, fz.now)
		var le *LogoutTokenError
		if err != nil {
			if !errors.As(err, &le) {
				t.Fatalf("not a refusal: %v", err)
			}
			return
		}
		if tok.Issuer != "https://idp.example" || tok.JTI != "jti-1" || tok.SID != "idp-session-1" ||
			(tok.Subject != "alice" && tok.Subject != "") || !tok.AcceptedUntil().After(fz.now) {
			t.Fatalf("accepted %q as %+v", raw, tok)
		}
	})
}
