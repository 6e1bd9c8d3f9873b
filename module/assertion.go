package module

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// Assertion configures a signed identity assertion for the upstream: a
// short-lived ES256 JWT whose audience is the app, carrying only the
// listed claims. Apps verify it with the keys at /.gatehouse/jwks.json.
type Assertion struct {
	// Header carries the JWT, such as X-Gatehouse-Assertion. Incoming
	// headers of this name are always removed.
	Header string `json:"header"`
	// Keys are PEM files of EC P-256 private keys. The first signs; the
	// others are only published (keep an old key listed until tokens it
	// signed have expired). Placeholders are resolved.
	Keys []string `json:"keys"`
	// Claims are the user claims the JWT carries (sub, email, name,
	// groups, acr, amr, auth_time, or any claim an identity header could
	// use); iss, aud, iat, nbf and exp are always set.
	Claims []string `json:"claims"`
	// TTL is the JWT's lifetime. Default: 60s.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// Issuer is the JWT's iss, an origin such as https://app.example.com.
	// Default: external_url. One of the two is required: the request's
	// Host is the client's to choose, so it cannot name the issuer.
	Issuer string `json:"issuer,omitempty"`
}

// assertionSigner is the runtime of an Assertion.
type assertionSigner struct {
	issuer string // the fixed iss: assertion issuer, else external_url
	header string
	claims []string
	ttl    time.Duration
	signer jose.Signer
	kid    string
	kids   []string // every key this handler publishes
	keys   *publishedKeys

	mu    sync.Mutex
	cache map[string]cachedAssertion
}

type cachedAssertion struct {
	token   string
	reissue time.Time
}

// publishedKeys are the public keys of one app's assertions, across
// handler instances and config reloads: a key no live handler signs with
// any more stays published until tokens it signed have expired.
type publishedKeys struct {
	mu      sync.Mutex
	current map[string]*liveKey // kid → key in use by live handlers
	retired map[string]retiredKey
}

type liveKey struct {
	key  jose.JSONWebKey
	refs int
	ttl  time.Duration
}

type retiredKey struct {
	key   jose.JSONWebKey
	until time.Time
}

func (p *publishedKeys) Destruct() error { return nil }

// acquire publishes keys for a handler.
func (p *publishedKeys) acquire(keys map[string]jose.JSONWebKey, ttl time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for kid, k := range keys {
		delete(p.retired, kid)
		lk := p.current[kid]
		if lk == nil {
			lk = &liveKey{key: k}
			p.current[kid] = lk
		}
		lk.refs++
		lk.ttl = max(lk.ttl, ttl)
	}
}

// release is a handler going away: keys nobody uses any more are retired
// until the tokens they signed have expired.
func (p *publishedKeys) release(kids []string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, kid := range kids {
		lk := p.current[kid]
		if lk == nil {
			continue
		}
		if lk.refs--; lk.refs <= 0 {
			delete(p.current, kid)
			p.retired[kid] = retiredKey{key: lk.key, until: now.Add(lk.ttl + time.Minute)}
		}
	}
}

// set returns the keys to publish now.
func (p *publishedKeys) set(now time.Time) jose.JSONWebKeySet {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out jose.JSONWebKeySet
	for _, k := range p.current {
		out.Keys = append(out.Keys, k.key)
	}
	for kid, r := range p.retired {
		if now.After(r.until) {
			delete(p.retired, kid)
			continue
		}
		out.Keys = append(out.Keys, r.key)
	}
	sort.Slice(out.Keys, func(i, j int) bool { return out.Keys[i].KeyID < out.Keys[j].KeyID })
	return out
}

// assertionKeys shares published keys per app and header across reloads.
var assertionKeys = caddy.NewUsagePool()

func loadECKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: a %q PEM block; want an EC P-256 private key (openssl ecparam -name prime256v1 -genkey -noout)", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: not an EC P-256 private key", path)
	}
	return ec, nil
}

// keyID is a stable id for a public key: a digest of its DER.
func keyID(pub *ecdsa.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

func (h *Handler) provisionAssertion() error {
	a := h.AssertionHeader
	if a == nil {
		return nil
	}
	repl := caddy.NewReplacer()
	ttl := time.Duration(a.TTL)
	if ttl == 0 {
		ttl = time.Minute
	}
	published := map[string]jose.JSONWebKey{}
	var first *ecdsa.PrivateKey
	var firstKID string
	for i, path := range a.Keys {
		key, err := loadECKey(repl.ReplaceKnown(path, ""))
		if err != nil {
			return fmt.Errorf("gatehouse: assertion_header: key: %v", err)
		}
		kid := keyID(&key.PublicKey)
		published[kid] = jose.JSONWebKey{Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}
		if i == 0 {
			first, firstKID = key, kid
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: first},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", firstKID))
	if err != nil {
		return fmt.Errorf("gatehouse: assertion_header: %v", err)
	}
	// The published keys outlive config reloads (the pool entry is kept
	// alive across them: a reload provisions the new handler before it
	// cleans up the old one).
	h.assertionKey = h.App
	val, _, err := assertionKeys.LoadOrNew(h.assertionKey, func() (caddy.Destructor, error) {
		return &publishedKeys{current: map[string]*liveKey{}, retired: map[string]retiredKey{}}, nil
	})
	if err != nil {
		return err
	}
	keys := val.(*publishedKeys)
	keys.acquire(published, ttl)
	kids := make([]string, 0, len(published))
	for kid := range published {
		kids = append(kids, kid)
	}
	issuer, err := authn.NormalizeOrigin(cmp.Or(a.Issuer, h.ExternalURL))
	if err != nil {
		return fmt.Errorf("gatehouse: assertion_header: issuer: %v", err)
	}
	h.assertion = &assertionSigner{issuer: issuer, header: http.CanonicalHeaderKey(a.Header), claims: a.Claims, ttl: ttl,
		signer: signer, kid: firstKID, kids: kids, keys: keys, cache: map[string]cachedAssertion{}}
	return nil
}

func (h *Handler) validateAssertion(bad func(directive, format string, args ...any), seen map[string]bool) {
	a := h.AssertionHeader
	if a == nil {
		return
	}
	if err := checkManagedHeaderName(a.Header); err != nil {
		bad("assertion_header", "%v", err)
	}
	if n := normalizeHeaderName(a.Header); seen[n] {
		bad("assertion_header", "%s is already an identity or policy header", a.Header)
	}
	if len(a.Keys) == 0 {
		bad("assertion_header", "key is required: an EC P-256 private key PEM file")
	}
	if len(a.Claims) == 0 {
		bad("assertion_header", "claims is required: the user claims the JWT carries, such as sub email groups")
	}
	if a.TTL != 0 && (time.Duration(a.TTL) < time.Second || time.Duration(a.TTL) > time.Hour) {
		bad("assertion_header", "ttl must be between 1s and 1h")
	}
	switch iss := a.Issuer; {
	case iss == "" && h.ExternalURL == "":
		bad("assertion_header", "needs a fixed issuer: set external_url (this site's public origin, such as https://app.example.com) "+
			"or issuer in its block; the request's Host is the client's to choose, so it cannot name the issuer")
	case iss != "":
		if err := checkOriginURL(iss, false); err != nil {
			bad("assertion_header", "issuer: %v", err)
		}
	}
}

// assertionClaims are the JWT's claims for a session.
func (h *Handler) assertionClaims(s *authn.Session, now time.Time) map[string]any {
	c := map[string]any{
		"iss": h.assertion.issuer,
		"aud": h.App,
		"iat": now.Unix(),
		"nbf": now.Unix() - 5,
		"exp": now.Add(h.assertion.ttl).Unix(),
	}
	for _, name := range h.assertion.claims {
		switch name {
		case "sub":
			c["sub"] = s.Subject
		case "idp":
			c["idp"] = h.Issuer
		case "email":
			if s.Email != "" {
				c["email"] = s.Email
			}
		case "name":
			if s.Name != "" {
				c["name"] = s.Name
			}
		case "groups":
			c["groups"] = append([]string{}, s.Groups...)
		case "acr":
			if s.ACR != "" {
				c["acr"] = s.ACR
			}
		case "amr":
			c["amr"] = append([]string{}, s.AMR...)
		case "auth_time":
			if s.AuthTime != 0 {
				c["auth_time"] = s.AuthTime
			}
		default:
			if v, ok := s.Extra[name]; ok {
				c[name] = v
			}
		}
	}
	return c
}

// setAssertion signs (or reuses, for half its lifetime) the session's
// assertion and sets it on the upstream request.
func (h *Handler) setAssertion(r *http.Request, s *authn.Session, now time.Time) error {
	a := h.assertion
	// Keyed by what the claims come from: the session, and the step-up
	// that may have changed its acr and auth_time. Nothing the client
	// chooses per request (such as Host) is in it.
	cacheKey := s.ID + "\x00" + s.ACR + "\x00" + strconv.FormatInt(s.AuthTime, 10)
	a.mu.Lock()
	if c, ok := a.cache[cacheKey]; ok && now.Before(c.reissue) {
		a.mu.Unlock()
		r.Header[a.header] = []string{c.token}
		return nil
	}
	a.mu.Unlock()
	token, err := jwt.Signed(a.signer).Claims(h.assertionClaims(s, now)).Serialize()
	if err != nil {
		return err
	}
	a.mu.Lock()
	if len(a.cache) > 10000 {
		a.cache = map[string]cachedAssertion{}
	}
	a.cache[cacheKey] = cachedAssertion{token: token, reissue: now.Add(a.ttl / 2)}
	a.mu.Unlock()
	r.Header[a.header] = []string{token}
	return nil
}

// serveJWKS publishes the assertion keys.
func (h *Handler) serveJWKS(w http.ResponseWriter, r *http.Request, d *decision) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return h.methodNotAllowed(w, r, d, "GET, HEAD")
	}
	d.reason = "jwks"
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	if h.assertion != nil {
		set = h.assertion.keys.set(time.Now())
	}
	b, err := json.Marshal(set)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodGet {
		_, _ = w.Write(b)
	}
	return nil
}
