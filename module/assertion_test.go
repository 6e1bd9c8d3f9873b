package module

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

func writeECKey(t *testing.T) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(key)
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func jwksOf(t *testing.T, h *Handler) jose.JSONWebKeySet {
	t.Helper()
	w, _ := serve(h, httptest.NewRequest(http.MethodGet, "https://app.example.com/.gatehouse/jwks.json", nil))
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(w.Body.Bytes(), &set); err != nil || w.Header().Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("jwks: %v %s", err, w.Body)
	}
	return set
}

func TestAssertion(t *testing.T) {
	now := time.Now()
	key1 := writeECKey(t)
	h := validHandler()
	h.now = func() time.Time { return now }
	h.AssertionHeader = &Assertion{Header: "X-Gatehouse-Assertion", Keys: []string{key1}, Claims: []string{"sub", "email", "groups", "acr"}, TTL: caddy.Duration(time.Minute),
		Issuer: "https://App.example.com:443"}
	h, _ = provision(t, h)
	sess := &authn.Session{ID: "s", Subject: "alice", Email: "alice@example.com", Name: "Alice", Groups: []string{"staff", "a,b"}, ACR: "urn:mfa",
		AMR: []string{"otp"}, Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
	r := httptest.NewRequest(http.MethodGet, "https://app.example.com/x", nil)
	r.AddCookie(sessionCookie(t, h, sess))
	r.Header.Set("Accept", "application/json")
	r.Header["X_gatehouse_assertion"] = []string{"forged"}
	r.Header.Set("X-Gatehouse-Assertion", "forged")
	w, got := serve(h, r)
	if w.Code != http.StatusNoContent {
		t.Fatalf("status %d", w.Code)
	}
	vals := got.Header["X-Gatehouse-Assertion"]
	if len(vals) != 1 || vals[0] == "forged" || got.Header["X_gatehouse_assertion"] != nil {
		t.Fatalf("assertion header: %v", got.Header)
	}
	tok, err := jwt.ParseSigned(vals[0], []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	set := jwksOf(t, h)
	if len(set.Keys) != 1 || tok.Headers[0].KeyID != set.Keys[0].KeyID {
		t.Fatalf("jwks %+v, kid %s", set, tok.Headers[0].KeyID)
	}
	var claims map[string]any
	if err := tok.Claims(set.Keys[0].Key, &claims); err != nil {
		t.Fatalf("signature: %v", err)
	}
	var std jwt.Claims
	_ = tok.Claims(set.Keys[0].Key, &std)
	if err := std.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{"payroll"}, Issuer: "https://app.example.com", Time: now}, 0); err != nil {
		t.Errorf("registered claims: %v", err)
	}
	var names []string
	for k := range claims {
		names = append(names, k)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "acr,aud,email,exp,groups,iat,iss,nbf,sub" {
		t.Errorf("claims %v: only the listed ones and the registered ones", names)
	}
	if claims["sub"] != "alice" || claims["groups"].([]any)[1] != "a,b" || claims["exp"].(float64) != float64(now.Add(time.Minute).Unix()) {
		t.Errorf("claims %v", claims)
	}
	// Reused for half its lifetime, then re-signed. The request's Host
	// changes neither the issuer nor the cache: the same token comes back.
	r2 := r.Clone(r.Context())
	_, got2 := serve(h, r2)
	if got2.Header.Get("X-Gatehouse-Assertion") != vals[0] {
		t.Error("the assertion was re-signed within half its lifetime")
	}
	for _, host := range []string{"evil.example:8443", "evil.example", "APP.EXAMPLE.COM"} {
		rh := r.Clone(r.Context())
		rh.Host = host
		_, goth := serve(h, rh)
		if goth == nil || goth.Header.Get("X-Gatehouse-Assertion") != vals[0] {
			t.Errorf("Host %s: a new assertion was signed (the Host chose its issuer or its cache entry)", host)
		}
	}
	if n := h.asserter.Cached(); n != 1 {
		t.Errorf("%d cached assertions for one session, want 1", n)
	}
	now = now.Add(31 * time.Second)
	_, got3 := serve(h, r.Clone(r.Context()))
	if got3.Header.Get("X-Gatehouse-Assertion") == vals[0] {
		t.Error("the assertion was not re-signed after half its lifetime")
	}

	// A reload with a new key: the old one stays published for the TTL.
	h2 := validHandler()
	h2.AssertionHeader = &Assertion{Header: "X-Gatehouse-Assertion", Keys: []string{writeECKey(t)}, Claims: []string{"sub"}, TTL: caddy.Duration(time.Minute)}
	h2.ExternalURL = "https://app.example.com"
	h2, _ = provision(t, h2)
	if set := jwksOf(t, h2); len(set.Keys) != 2 {
		t.Errorf("after rotating the key: %d keys published, want the new and the old", len(set.Keys))
	}
}

func TestAssertionConfigErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "rsa.pem")
	_ = os.WriteFile(bad, []byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"), 0o600)
	for name, c := range map[string]struct {
		a    *Assertion
		want string
	}{
		"missing key file": {&Assertion{Header: "X-A", Keys: []string{"/nonexistent.pem"}, Claims: []string{"sub"}}, "assertion_header: key"},
		"not an EC key":    {&Assertion{Header: "X-A", Keys: []string{bad}, Claims: []string{"sub"}}, "want an EC P-256 private key"},
		"no claims":        {&Assertion{Header: "X-A", Keys: []string{bad}}, "claims is required"},
		"clashing header":  {&Assertion{Header: "x_remote_user", Keys: []string{bad}, Claims: []string{"sub"}}, "already an identity or policy header"},
		"ttl too long":     {&Assertion{Header: "X-A", Keys: []string{bad}, Claims: []string{"sub"}, TTL: caddy.Duration(2 * time.Hour)}, "ttl must be"},
		"no issuer":        {&Assertion{Header: "X-A", Keys: []string{bad}, Claims: []string{"sub"}, Issuer: "-"}, "assertion_header: needs a fixed issuer: set external_url"},
		"issuer with path": {&Assertion{Header: "X-A", Keys: []string{bad}, Claims: []string{"sub"}, Issuer: "https://app.example.com/x"}, "assertion_header: issuer: \"https://app.example.com/x\" must be an origin"},
		"issuer over http": {&Assertion{Header: "X-A", Keys: []string{bad}, Claims: []string{"sub"}, Issuer: "http://app.example.com"}, "must use https"},
	} {
		h := validHandler()
		if c.a.Issuer == "" {
			c.a.Issuer = "https://app.example.com"
		} else if c.a.Issuer == "-" {
			c.a.Issuer = ""
		}
		h.AssertionHeader = c.a
		if err := tryProvision(h); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}
