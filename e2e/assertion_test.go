package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func writeKey(t *testing.T, dir, name string) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// verifyingApp is an upstream that trusts nothing but a valid assertion,
// verified the way an app would: with a standard JOSE library and the
// keys Gatehouse publishes.
type verifyingApp struct {
	*httptest.Server
	jwksURL string
	client  *http.Client
	mu      sync.Mutex
	last    string // the last assertion seen
}

type verdict struct {
	Valid  bool           `json:"valid"`
	Error  string         `json:"error,omitempty"`
	KeyID  string         `json:"kid"`
	Claims map[string]any `json:"claims"`
	Count  int            `json:"count"` // assertion headers received
}

func (a *verifyingApp) verify(raw string) verdict {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return verdict{Error: err.Error()}
	}
	resp, err := a.client.Get(a.jwksURL)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return verdict{Error: err.Error()}
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		return verdict{Error: "unknown kid " + tok.Headers[0].KeyID, KeyID: tok.Headers[0].KeyID}
	}
	var claims map[string]any
	var std jwt.Claims
	if err := tok.Claims(keys[0].Key, &claims, &std); err != nil {
		return verdict{Error: err.Error()}
	}
	if err := std.Validate(jwt.Expected{AnyAudience: jwt.Audience{"signed"}}); err != nil {
		return verdict{Error: err.Error()}
	}
	return verdict{Valid: true, KeyID: tok.Headers[0].KeyID, Claims: claims}
}

func TestAssertionHeader(t *testing.T) {
	base := fmt.Sprintf("https://localhost:%d", freePort(t))
	p := startIdP(t, idpClient{ClientID: "sig", ClientSecret: "sig-secret",
		RedirectURIs: []string{base + "/.gatehouse/callback"}, PostLogoutRedirectURIs: []string{base + "/.gatehouse/logout"}})
	app := &verifyingApp{jwksURL: base + "/.gatehouse/jwks.json"}
	app.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header.Values("X-Gatehouse-Assertion")
		v := verdict{Count: len(vals)}
		if len(vals) == 1 {
			app.mu.Lock()
			app.last = vals[0]
			app.mu.Unlock()
			v = app.verify(vals[0])
			v.Count = 1
		}
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(app.Close)
	keys := t.TempDir()
	key1, key2 := writeKey(t, keys, "k1.pem"), writeKey(t, keys, "k2.pem")
	site := func(key string) string {
		return fmt.Sprintf(`%[1]s {
	gatehouse {
		app signed
		issuer %[2]s
		client_id sig
		client_secret sig-secret
		scopes openid email profile groups
		cookie_secret %[3]s
		external_url %[1]s
		assertion_header X-Gatehouse-Assertion {
			key %[4]s
			claims sub email groups acr
			ttl 30s
		}
	}
	reverse_proxy %[5]s
}
`, base, p.Issuer, "assertion-test-secret-0123456789abcdef", key, app.Listener.Addr())
	}
	gh := startGatehouse(t, site(key1), nil, base)
	app.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: gh.roots}}}

	b := newBrowser(t, gh)
	var v verdict
	b.login(base+"/", "alice").json(t, &v)
	if !v.Valid || v.Count != 1 {
		t.Fatalf("the app could not verify the assertion: %+v", v)
	}
	var names []string
	for k := range v.Claims {
		names = append(names, k)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "acr,aud,email,exp,groups,iat,iss,nbf,sub" || v.Claims["email"] != "alice@example.com" ||
		v.Claims["iss"] != base || v.Claims["aud"] != "signed" {
		t.Errorf("claims: %v", v.Claims)
	}

	// A client's own assertion, in any spelling, never reaches the app.
	forged, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: mustKey(t)}, (&jose.SignerOptions{}).WithHeader("kid", v.KeyID))
	fake, _ := jwt.Signed(forged).Claims(map[string]any{"sub": "root", "aud": "signed"}).Serialize()
	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	setNavigation(req)
	req.Header["X-Gatehouse-Assertion"] = []string{fake}
	req.Header["X_gatehouse_assertion"] = []string{fake}
	b.do(req).json(t, &v)
	if !v.Valid || v.Count != 1 || v.Claims["sub"] != "alice" {
		t.Errorf("with a forged assertion: %+v", v)
	}
	app.mu.Lock()
	old := app.last
	app.mu.Unlock()

	// Rotation: a reload with a new key; tokens the old key signed still
	// verify (the old key stays published), new ones use the new key.
	if err := os.WriteFile(gh.config, []byte(strings.Replace(mustRead(t, gh.config), key1, key2, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	gh.reload(t)
	if v := app.verify(old); !v.Valid {
		t.Errorf("a token signed before the rotation no longer verifies: %+v", v)
	}
	var after verdict
	b.fetch(http.MethodGet, base+"/after").json(t, &after)
	if !after.Valid || after.KeyID == v.KeyID {
		t.Errorf("after the rotation: %+v (old kid %s)", after, v.KeyID)
	}
	resp, err := app.client.Get(app.jwksURL)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	_ = json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	if len(set.Keys) != 2 {
		t.Errorf("JWKS after rotation: %d keys, want the new and the old", len(set.Keys))
	}
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
