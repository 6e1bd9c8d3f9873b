package authn

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// dpopKey is a client's proof key and its thumbprint (the token's
// cnf.jkt).
type dpopKey struct {
	key *ecdsa.PrivateKey
	jkt string
}

func newDPoPKey(t testing.TB) dpopKey {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tp, err := (&jose.JSONWebKey{Key: &k.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return dpopKey{k, base64.RawURLEncoding.EncodeToString(tp)}
}

// proof signs a DPoP proof with claims merged over a valid one for GET
// https://api.example/orders carrying token; jwk is the key put in the
// header (the signing key's by default).
func (d dpopKey) proof(t testing.TB, token string, claims map[string]any, typ string, jwk any) string {
	t.Helper()
	sum := sha256.Sum256([]byte(token))
	c := map[string]any{"jti": "p-" + rand.Text(), "htm": "GET", "htu": "https://api.example/orders", "iat": time.Now().Unix(),
		"ath": base64.RawURLEncoding.EncodeToString(sum[:])}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	if jwk == nil {
		jwk = &d.key.PublicKey
	}
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("jwk", jose.JSONWebKey{Key: jwk})
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: d.key}, opts)
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

// TestVerifyDPoP: a proof is accepted only for this request, this token
// and the key the token is bound to, while fresh; each hostile proof is
// refused with invalid_dpop_proof and its reason.
func TestVerifyDPoP(t *testing.T) {
	k, other := newDPoPKey(t), newDPoPKey(t)
	const token = "the.access.token"
	now := time.Now()
	htu := "https://api.example/orders"
	ok := k.proof(t, token, nil, "dpop+jwt", nil)
	if p, err := VerifyDPoP(ok, "GET", htu, token, k.jkt, now); err != nil || p.JTI == "" || !p.Until.After(now) {
		t.Fatalf("a valid proof: %+v %v", p, err)
	}
	for _, c := range []struct{ name, htu string }{
		{"default port", "https://api.example:443/orders"}, {"case of the host", "https://API.example/orders"},
	} {
		if _, err := VerifyDPoP(ok, "GET", c.htu, token, k.jkt, now); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if _, err := VerifyDPoP(k.proof(t, token, map[string]any{"htu": htu + "?q=1#f"}, "dpop+jwt", nil), "GET", htu, token, k.jkt, now); err != nil {
		t.Errorf("htu with a query: %v", err)
	}
	for _, c := range []struct {
		name, proof, method, htu, token, jkt, reason string
	}{
		{"another method", ok, "POST", htu, token, k.jkt, DPoPMismatch},
		{"another path", ok, "GET", "https://api.example/admin", token, k.jkt, DPoPMismatch},
		{"another host", ok, "GET", "https://evil.example/orders", token, k.jkt, DPoPMismatch},
		{"http for https", ok, "GET", "http://api.example/orders", token, k.jkt, DPoPMismatch},
		{"another token (ath)", ok, "GET", htu, "another.access.token", k.jkt, DPoPMismatch},
		{"no ath", k.proof(t, token, map[string]any{"ath": nil}, "dpop+jwt", nil), "GET", htu, token, k.jkt, DPoPMismatch},
		{"a token bound to another key", ok, "GET", htu, token, other.jkt, DPoPKey},
		{"too old", k.proof(t, token, map[string]any{"iat": now.Add(-2 * time.Minute).Unix()}, "dpop+jwt", nil), "GET", htu, token, k.jkt, DPoPStale},
		{"from the future", k.proof(t, token, map[string]any{"iat": now.Add(time.Minute).Unix()}, "dpop+jwt", nil), "GET", htu, token, k.jkt, DPoPStale},
		{"no iat", k.proof(t, token, map[string]any{"iat": nil}, "dpop+jwt", nil), "GET", htu, token, k.jkt, DPoPStale},
		{"no jti", k.proof(t, token, map[string]any{"jti": nil}, "dpop+jwt", nil), "GET", htu, token, k.jkt, DPoPMalformed},
		{"typ JWT", k.proof(t, token, nil, "JWT", nil), "GET", htu, token, k.jkt, DPoPMalformed},
		{"jwk of another key", k.proof(t, token, nil, "dpop+jwt", &other.key.PublicKey), "GET", htu, token, k.jkt, DPoPMalformed},
		{"a private key in the header", k.proof(t, token, nil, "dpop+jwt", k.key), "GET", htu, token, k.jkt, DPoPMalformed},
		{"alg none", b64(map[string]any{"alg": "none", "typ": "dpop+jwt"}) + "." + b64(map[string]any{"jti": "x"}) + ".", "GET", htu, token, k.jkt, DPoPMalformed},
		{"not a JWT", "abc", "GET", htu, token, k.jkt, DPoPMalformed},
		{"too large", strings.Repeat("a", 20000), "GET", htu, token, k.jkt, DPoPMalformed},
	} {
		_, err := VerifyDPoP(c.proof, c.method, c.htu, c.token, c.jkt, now)
		var be *BearerError
		if !errors.As(err, &be) || be.Reason != c.reason || be.Code != "invalid_dpop_proof" {
			t.Errorf("%s: %v, want %s", c.name, err, c.reason)
		}
	}
}

// FuzzVerifyDPoP: any proof is refused with a BearerError or accepted
// with a jti; one that is accepted was signed by the key the token is
// bound to (a fuzzer cannot forge an ES256 signature).
func FuzzVerifyDPoP(f *testing.F) {
	k := newDPoPKey(f)
	const token = "the.access.token"
	f.Add(k.proof(f, token, nil, "dpop+jwt", nil))
	f.Add(k.proof(f, token, map[string]any{"htu": "https://API.example:443/orders?x"}, "dpop+jwt", nil))
	f.Add(b64(map[string]any{"alg": "none", "typ": "dpop+jwt"}) + "." + b64(map[string]any{"jti": "x"}) + ".")
	f.Fuzz(func(t *testing.T, proof string) {
		p, err := VerifyDPoP(proof, "GET", "https://api.example/orders", token, k.jkt, time.Now())
		var be *BearerError
		switch {
		case err != nil && !errors.As(err, &be):
			t.Fatalf("an error that is not a BearerError: %v", err)
		case err == nil && (p == nil || p.JTI == ""):
			t.Fatalf("accepted without a jti: %q", proof)
		}
	})
}
