package e2e

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// evilIdP is an OpenID Provider that answers every authorization at once
// (no login form) and issues whatever ID token the current mode asks for:
// the tokens a compromised or confused IdP, or an attacker in the middle,
// could produce. Gatehouse must refuse all but "ok".
type evilIdP struct {
	*httptest.Server
	key, other *rsa.PrivateKey
	mu         sync.Mutex
	mode       string
	codes      map[string]evilCode
	jwksHits   atomic.Int64
}

type evilCode struct {
	nonce  string
	issued time.Time
}

func startEvilIdP(t *testing.T) *evilIdP {
	e := &evilIdP{mode: "ok", codes: map[string]evilCode{}}
	e.key, _ = rsa.GenerateKey(rand.Reader, 2048)
	e.other, _ = rsa.GenerateKey(rand.Reader, 2048)
	mux := http.NewServeMux()
	e.Server = httptest.NewServer(mux)
	t.Cleanup(e.Close)
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": e.URL, "authorization_endpoint": e.URL + "/authorize",
			"token_endpoint": e.URL + "/token", "jwks_uri": e.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"}})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		e.jwksHits.Add(1)
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &e.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		back, _ := url.Parse(q.Get("redirect_uri"))
		v := url.Values{"state": {q.Get("state")}}
		e.mu.Lock()
		mode := e.mode
		if mode == "error" {
			v.Set("error", "access_denied")
		} else {
			code := newCode()
			e.codes[code] = evilCode{nonce: q.Get("nonce"), issued: time.Now()}
			v.Set("code", code)
		}
		e.mu.Unlock()
		back.RawQuery = v.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		e.mu.Lock()
		c, ok := e.codes[r.PostForm.Get("code")]
		delete(e.codes, r.PostForm.Get("code"))
		mode := e.mode
		e.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant"})
			return
		}
		now := time.Now()
		claims := map[string]any{"iss": e.URL, "aud": "evil", "sub": "alice", "nonce": c.nonce, "iat": now.Unix(),
			"exp": now.Add(5 * time.Minute).Unix(), "auth_time": now.Unix(), "email": "alice@example.com", "email_verified": true,
			"acr": "urn:gatehouse:loa:pwd", "amr": []string{"pwd"}}
		key, alg, kid := e.key, jose.RS256, "k1"
		switch mode {
		case "mfa":
			claims["acr"], claims["amr"] = "urn:gatehouse:loa:mfa", []string{"pwd", "otp"}
		case "wrong_nonce":
			claims["nonce"] = "not-the-nonce"
		case "no_nonce":
			delete(claims, "nonce")
		case "other_client":
			claims["aud"] = "another-app"
		case "two_audiences":
			claims["aud"] = []string{"evil", "another-app"}
		case "other_issuer":
			claims["iss"] = "https://idp.evil.example"
		case "expired":
			claims["exp"] = now.Add(-time.Minute).Unix()
		case "future_iat":
			claims["iat"] = now.Add(time.Hour).Unix()
		case "no_sub":
			delete(claims, "sub")
		case "other_user":
			claims["sub"] = "mallory"
		case "unknown_key":
			key = e.other
		case "stale_mfa":
			claims["acr"], claims["amr"], claims["auth_time"] = "urn:gatehouse:loa:mfa", []string{"pwd", "otp"}, now.Add(-time.Hour).Unix()
		case "future_mfa": // a step-up that would stay fresh for an hour
			claims["acr"], claims["amr"], claims["auth_time"] = "urn:gatehouse:loa:mfa", []string{"pwd", "otp"}, now.Add(time.Hour).Unix()
		case "no_auth_time": // max_age was sent: OIDC Core requires it
			delete(claims, "auth_time")
		case "future_auth_time":
			claims["auth_time"] = now.Add(30 * time.Second).Unix()
		case "future_iat_small": // within the old 60 s tolerance
			claims["iat"] = now.Add(30 * time.Second).Unix()
		case "random_kid": // a key id the IdP never had: each one used to fetch the key set
			key, kid = e.other, newCode()
		case "hostile_email":
			claims["email"] = "mallory@evil.example@corp.test"
		}
		var tok string
		switch mode {
		case "alg_none":
			tok = b64url(map[string]string{"alg": "none", "kid": "k1"}) + "." + b64url(claims) + "."
		case "hs256_public_key":
			der, _ := x509.MarshalPKIXPublicKey(&e.key.PublicKey)
			signing := b64url(map[string]string{"alg": "HS256", "kid": "k1", "typ": "JWT"}) + "." + b64url(claims)
			m := hmac.New(sha256.New, der)
			m.Write([]byte(signing))
			tok = signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
		default:
			s, _ := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
			payload, _ := json.Marshal(claims)
			jws, _ := s.Sign(payload)
			tok, _ = jws.CompactSerialize()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "id_token": tok})
	})
	return e
}

func (e *evilIdP) setMode(m string) {
	e.mu.Lock()
	e.mode = m
	e.mu.Unlock()
}

func newCode() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func b64url(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}
