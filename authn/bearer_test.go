package authn

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// TestBearerVerify: an RFC 9068 access token is accepted only when every
// check holds; each hostile token is refused with the reason and the
// RFC 6750 error code a client can act on.
func TestBearerVerify(t *testing.T) {
	f := newFakeIdP(t)
	b := &BearerIssuer{Discovery: NewDiscovery(f.URL, f.Client()), Audiences: []string{"https://api.example"},
		RequireScopes: []string{"orders:read"}, GroupsClaim: "groups"}
	ctx := context.Background()
	pubDER, _ := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
	sign := func(typ string, claims map[string]any) string {
		opts := (&jose.SignerOptions{}).WithHeader("kid", "k1")
		if typ != "" {
			opts = opts.WithType(jose.ContentType(typ))
		}
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: f.key}, opts)
		if err != nil {
			t.Fatal(err)
		}
		jws, err := s.Sign([]byte(mustJSON(claims)))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := jws.CompactSerialize()
		return out
	}
	now := time.Now()
	service := func() map[string]any {
		return map[string]any{"iss": f.URL, "sub": "reporting", "client_id": "reporting", "aud": "https://api.example",
			"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": "j1", "scope": "orders:read orders:write"}
	}
	user := func() map[string]any {
		c := service()
		c["sub"], c["email"], c["email_verified"], c["groups"], c["acr"] = "alice", "alice@example.com", true, []string{"staff"}, "urn:mfa"
		return c
	}
	with := func(base func() map[string]any, k string, v any) map[string]any {
		c := base()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	hs256 := func(claims map[string]any) string {
		signing := b64(map[string]string{"alg": "HS256", "kid": "k1", "typ": "at+jwt"}) + "." + b64(claims)
		m := hmac.New(sha256.New, pubDER)
		m.Write([]byte(signing))
		return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	for _, c := range []struct {
		name, token, reason, code string
		check                     func(t *testing.T, tok *AccessToken)
	}{
		{"a service's token", sign("at+jwt", service()), "", "", func(t *testing.T, tok *AccessToken) {
			if !tok.Service || tok.Kind() != "service" || tok.ClientID != "reporting" || strings.Join(tok.Scopes, " ") != "orders:read orders:write" || tok.ID != "j1" {
				t.Errorf("token %+v", tok)
			}
		}},
		{"a token on alice's behalf", sign("at+jwt", user()), "", "", func(t *testing.T, tok *AccessToken) {
			if tok.Service || tok.Subject != "alice" || tok.Email != "alice@example.com" || strings.Join(tok.Groups, ",") != "staff" || tok.ACR != "urn:mfa" {
				t.Errorf("token %+v", tok)
			}
		}},
		{"typ application/at+jwt", sign("application/at+jwt", service()), "", "", nil},
		{"aud as a list", sign("at+jwt", with(service, "aud", []string{"other", "https://api.example"})), "", "", nil},
		{"scope as a list", sign("at+jwt", with(service, "scope", []string{"orders:read"})), "", "", nil},
		{"an unverified email is left out", sign("at+jwt", with(user, "email_verified", false)), "", "", func(t *testing.T, tok *AccessToken) {
			if tok.Email != "" {
				t.Errorf("unverified email kept: %q", tok.Email)
			}
		}},
		{"another audience", sign("at+jwt", with(service, "aud", "https://other.example")), BearerAudience, "invalid_token", nil},
		{"no audience", sign("at+jwt", with(service, "aud", nil)), BearerAudience, "invalid_token", nil},
		{"another issuer", sign("at+jwt", with(service, "iss", "https://evil.example")), BearerIssuerUnknown, "invalid_token", nil},
		{"expired", sign("at+jwt", with(service, "exp", now.Add(-time.Second).Unix())), BearerExpired, "invalid_token", nil},
		{"no exp", sign("at+jwt", with(service, "exp", nil)), BearerClaims, "invalid_token", nil},
		{"issued in the future", sign("at+jwt", with(service, "iat", now.Add(time.Minute).Unix())), BearerIssuedAt, "invalid_token", nil},
		{"no iat", sign("at+jwt", with(service, "iat", nil)), BearerIssuedAt, "invalid_token", nil},
		{"not valid yet", sign("at+jwt", with(service, "nbf", now.Add(time.Minute).Unix())), BearerNotYetValid, "invalid_token", nil},
		{"no sub", sign("at+jwt", with(service, "sub", nil)), BearerClaims, "invalid_token", nil},
		{"a sub with a bidi override", sign("at+jwt", with(service, "sub", "ali\u202ece")), BearerClaims, "invalid_token", nil},
		{"missing the required scope", sign("at+jwt", with(service, "scope", "orders:write")), BearerScope, "insufficient_scope", nil},
		{"a plain JWT", sign("JWT", service()), BearerType, "invalid_token", nil},
		{"no typ", sign("", service()), BearerType, "invalid_token", nil},
		{"an ID token (nonce, typ JWT)", f.sign(t, f.key, with(service, "nonce", "n")), BearerType, "invalid_token", nil},
		{"an ID token typed at+jwt", sign("at+jwt", with(service, "nonce", "n")), BearerType, "invalid_token", nil},
		{"signed by an unknown key", func() string {
			s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: f.otherKey}, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "k1"))
			jws, _ := s.Sign([]byte(mustJSON(service())))
			out, _ := jws.CompactSerialize()
			return out
		}(), BearerSignature, "invalid_token", nil},
		{"alg none", b64(map[string]string{"alg": "none", "typ": "at+jwt"}) + "." + b64(service()) + ".", BearerAlgorithm, "invalid_token", nil},
		{"HS256 keyed with the public key", hs256(service()), BearerAlgorithm, "invalid_token", nil},
		{"not a JWT", "abc.def", BearerMalformed, "invalid_token", nil},
		{"empty", "", BearerMalformed, "invalid_token", nil},
		{"too large", strings.Repeat("a", 20000), BearerMalformed, "invalid_token", nil},
		{"a tampered payload", func() string {
			parts := strings.Split(sign("at+jwt", service()), ".")
			parts[1] = b64(with(service, "sub", "admin"))
			return strings.Join(parts, ".")
		}(), BearerSignature, "invalid_token", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok, err := b.Verify(ctx, c.token)
			var be *BearerError
			switch {
			case c.reason == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.reason == "":
			case !errors.As(err, &be) || be.Reason != c.reason || be.Code != c.code:
				t.Fatalf("Verify = %+v, %v; want %s (%s)", tok, err, c.reason, c.code)
			case be.Description == "" || strings.Contains(be.Description, c.token[:min(len(c.token), 20)]) && c.token != "":
				t.Errorf("description %q", be.Description)
			}
			if c.check != nil {
				c.check(t, tok)
			}
		})
	}
	// A plain JWT is accepted where configured, an ID token still not.
	plain := *b
	plain.PlainJWT = true
	if _, err := plain.Verify(ctx, sign("JWT", service())); err != nil {
		t.Errorf("plain JWT with PlainJWT: %v", err)
	}
	if _, err := plain.Verify(ctx, f.sign(t, f.key, with(service, "nonce", "n"))); err == nil {
		t.Error("an ID token accepted as an access token")
	}
	// The issuer named in the token picks the verifier, unverified.
	if iss, err := ParseBearer(sign("at+jwt", service())); err != nil || iss != f.URL {
		t.Errorf("ParseBearer = %q, %v", iss, err)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// FuzzParseBearer: any string is refused or read; a token read names an
// issuer and uses an algorithm jose knows, and none is never read.
func FuzzParseBearer(f *testing.F) {
	f.Add(b64(map[string]string{"alg": "RS256", "typ": "at+jwt"}) + "." + b64(map[string]any{"iss": "https://idp"}) + ".c2ln")
	f.Add(b64(map[string]string{"alg": "none"}) + "." + b64(map[string]any{"iss": "https://idp"}) + ".")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, raw string) {
		iss, err := ParseBearer(raw)
		if err == nil && (iss == "" || strings.EqualFold(headerAlg(raw), "none")) {
			t.Fatalf("read %q from %q", iss, raw)
		}
		var be *BearerError
		if err != nil && !errors.As(err, &be) {
			t.Fatalf("an error that is not a BearerError: %v", err)
		}
	})
}
