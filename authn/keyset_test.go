package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// jwksServer serves a key set that a test can change, counting fetches.
type jwksServer struct {
	*httptest.Server
	mu    sync.Mutex
	keys  []any
	hits  atomic.Int64
	delay time.Duration
}

func newJWKSServer(t *testing.T, keys ...any) *jwksServer {
	s := &jwksServer{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body := map[string]any{"keys": s.keys}
		d := s.delay
		s.mu.Unlock()
		time.Sleep(d)
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(keys ...any) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func signWith(t *testing.T, key any, alg jose.SignatureAlgorithm, kid string) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign([]byte(`{"sub":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func TestKeySetRefreshIsRateLimited(t *testing.T) {
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv := newJWKSServer(t, jose.JSONWebKey{Key: &k1.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"})
	ks := NewKeySet(srv.URL, srv.Client())
	ctx := context.Background()

	// First use fetches; a known key never fetches again.
	for range 5 {
		if _, err := ks.VerifySignature(ctx, signWith(t, k1, jose.RS256, "k1")); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.hits.Load(); n != 1 {
		t.Fatalf("%d fetches for 5 tokens of a known key, want 1", n)
	}

	// A flood of tokens with made-up key ids, in parallel and in a row,
	// right after a fetch: none fetches.
	var wg sync.WaitGroup
	var refused atomic.Int64
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kid := "forged-" + string(rune('a'+i%26))
			if _, err := ks.VerifySignature(ctx, signWith(t, k2, jose.RS256, kid)); errors.Is(err, ErrUnknownKey) {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := srv.hits.Load(); n != 1 || refused.Load() != 50 {
		t.Fatalf("after 50 unknown-key tokens: %d fetches (want 1), %d refused as unknown (want 50)", n, refused.Load())
	}

	// Once the interval has passed, one token fetches once, and the set's
	// new key (a rotation) verifies; concurrent callers share that fetch.
	srv.set(jose.JSONWebKey{Key: &k1.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"},
		jose.JSONWebKey{Key: &k2.PublicKey, KeyID: "k2", Algorithm: "RS256", Use: "sig"})
	srv.mu.Lock()
	srv.delay = 100 * time.Millisecond
	srv.mu.Unlock()
	ks.mu.Lock()
	ks.last = ks.last.Add(-KeyRefreshEvery)
	ks.mu.Unlock()
	var ok atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := ks.VerifySignature(ctx, signWith(t, k2, jose.RS256, "k2")); err == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := srv.hits.Load(); n != 2 || ok.Load() < 1 {
		t.Fatalf("after the interval: %d fetches (want 2), %d verified", n, ok.Load())
	}
	if ks.Fetches() != 2 {
		t.Errorf("Fetches() = %d", ks.Fetches())
	}
}

func TestKeySetRefusesWhatItMust(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := newJWKSServer(t,
		map[string]any{"kty": "OKP", "crv": "X448", "x": "AAAA", "kid": "odd"}, // a key type go-jose cannot read: skipped
		jose.JSONWebKey{Key: &rk.PublicKey, KeyID: "enc", Algorithm: "RSA-OAEP", Use: "enc"},
		jose.JSONWebKey{Key: &ek.PublicKey, KeyID: "ec", Algorithm: "ES256", Use: "sig"})
	ks := NewKeySet(srv.URL, srv.Client())
	ctx := context.Background()
	if _, err := ks.VerifySignature(ctx, signWith(t, ek, jose.ES256, "ec")); err != nil {
		t.Fatalf("an ES256 token of the set's signing key: %v", err)
	}
	if _, err := ks.VerifySignature(ctx, signWith(t, ek, jose.ES256, "")); err != nil {
		t.Fatalf("a token without kid: %v", err)
	}
	// An encryption key is not a signing key.
	if _, err := ks.VerifySignature(ctx, signWith(t, rk, jose.RS256, "enc")); err == nil {
		t.Error("a token verified with an encryption key")
	}
	// HS256 keyed with the public key, and alg none, never verify.
	der, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"ec"}`))
	body := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"root"}`))
	m := hmac.New(sha256.New, der)
	m.Write([]byte(head + "." + body))
	if _, err := ks.VerifySignature(ctx, head+"."+body+"."+base64.RawURLEncoding.EncodeToString(m.Sum(nil))); err == nil {
		t.Error("HS256 with the public key verified")
	}
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`))
	if _, err := ks.VerifySignature(ctx, none+"."+body+"."); err == nil {
		t.Error("alg none verified")
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("%d fetches, want 1 (refusals must not fetch)", n)
	}
}

// TestFinishDoesNotHammerTheKeySet: logins with tokens signed by unknown
// keys fetch the IdP's key set at most once per interval.
func TestFinishDoesNotHammerTheKeySet(t *testing.T) {
	f := newFakeIdP(t)
	rp := &RelyingParty{Discovery: NewDiscovery(f.URL, f.Client()), HTTPClient: f.Client(), ClientID: "gatehouse", Scopes: []string{"openid"}}
	for i := range 20 {
		st, err := rp.Begin(context.Background(), "https://app.example/.gatehouse/callback", "/", AuthOptions{})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		claims := map[string]any{"iss": f.URL, "aud": "gatehouse", "sub": "alice", "nonce": st.Nonce, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
		tok := f.sign(t, f.key, claims) // the first login is genuine
		if i > 0 {
			// Then forged: another key, and a key id the IdP never had
			// or the one it has.
			kid := "forged"
			if i%2 == 0 {
				kid = "k1"
			}
			s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: f.otherKey}, (&jose.SignerOptions{}).WithHeader("kid", kid))
			payload, _ := json.Marshal(claims)
			jws, _ := s.Sign(payload)
			tok, _ = jws.CompactSerialize()
		}
		f.mu.Lock()
		f.token = func() (int, map[string]any) {
			return 200, map[string]any{"access_token": "at", "token_type": "Bearer", "id_token": tok}
		}
		f.mu.Unlock()
		_, err = rp.Finish(context.Background(), "code", st)
		if i == 0 && err != nil {
			t.Fatalf("the genuine login: %v", err)
		}
		var le *LoginError
		if i > 0 && (!errors.As(err, &le) || le.Reason != "id_token_invalid") {
			t.Fatalf("forged login %d: %v", i, err)
		}
	}
	if n := f.jwksHits.Load(); n != 1 {
		t.Errorf("%d key-set fetches for 1 genuine and 19 forged logins within the interval, want 1", n)
	}
}
