package authn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// AssertionConfig describes a signed identity assertion for the upstream:
// a short-lived ES256 JWT whose audience is the app, carrying only the
// listed claims. Apps verify it with the keys PublishedKeys lists.
type AssertionConfig struct {
	// Issuer is the JWT's iss: this site's origin, never the request's
	// Host (the client's to choose).
	Issuer string
	// Audience is the JWT's aud: the app's name.
	Audience string
	// Keys are EC P-256 private keys: the first signs, every one is
	// published.
	Keys []*ecdsa.PrivateKey
	// Claims are the user claims the JWT carries: sub, idp, email, name,
	// groups, acr, amr, auth_time, or any claim the session keeps in
	// Extra. iss, aud, iat, nbf and exp are always set.
	Claims []string
	// TTL is the JWT's lifetime.
	TTL time.Duration
}

// Asserter signs assertions for sessions. A token is reused for half its
// lifetime, keyed by what its claims come from (the session and its
// step-up state), never by anything the client chooses per request.
type Asserter struct {
	cfg    AssertionConfig
	signer jose.Signer
	kids   []string // every key this asserter publishes
	keys   *PublishedKeys

	mu    sync.Mutex
	cache map[string]cachedAssertion
}

type cachedAssertion struct {
	token   string
	reissue time.Time
}

// maxCachedAssertions bounds the asserter's cache; past it, it starts over.
const maxCachedAssertions = 10000

// NewAsserter publishes cfg's keys in keys (which outlive config
// reloads) and returns an asserter that signs with the first. Release
// undoes the publication.
func NewAsserter(cfg AssertionConfig, keys *PublishedKeys) (*Asserter, error) {
	if len(cfg.Keys) == 0 {
		return nil, errors.New("authn: an assertion needs a signing key")
	}
	published := map[string]jose.JSONWebKey{}
	var firstKID string
	for i, key := range cfg.Keys {
		kid := keyID(&key.PublicKey)
		published[kid] = jose.JSONWebKey{Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}
		if i == 0 {
			firstKID = kid
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: cfg.Keys[0]},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", firstKID))
	if err != nil {
		return nil, err
	}
	keys.acquire(published, cfg.TTL)
	a := &Asserter{cfg: cfg, signer: signer, keys: keys, cache: map[string]cachedAssertion{}}
	for kid := range published {
		a.kids = append(a.kids, kid)
	}
	return a, nil
}

// Release stops publishing this asserter's keys once no other asserter
// uses them and the tokens they signed have expired.
func (a *Asserter) Release(now time.Time) { a.keys.release(a.kids, now) }

// Token returns the session's assertion, signed now or reused.
func (a *Asserter) Token(s *Session, now time.Time) (string, error) {
	key := s.ID + "\x00" + s.ACR + "\x00" + strconv.FormatInt(s.AuthTime, 10)
	a.mu.Lock()
	if c, ok := a.cache[key]; ok && now.Before(c.reissue) {
		a.mu.Unlock()
		return c.token, nil
	}
	a.mu.Unlock()
	token, err := jwt.Signed(a.signer).Claims(a.claims(s, now)).Serialize()
	if err != nil {
		return "", err
	}
	a.mu.Lock()
	if len(a.cache) >= maxCachedAssertions {
		a.cache = map[string]cachedAssertion{}
	}
	a.cache[key] = cachedAssertion{token: token, reissue: now.Add(a.cfg.TTL / 2)}
	a.mu.Unlock()
	return token, nil
}

// Cached is how many tokens the asserter keeps for reuse.
func (a *Asserter) Cached() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.cache)
}

// claims are the JWT's claims for a session.
func (a *Asserter) claims(s *Session, now time.Time) map[string]any {
	c := map[string]any{
		"iss": a.cfg.Issuer,
		"aud": a.cfg.Audience,
		"iat": now.Unix(),
		"nbf": now.Unix() - 5,
		"exp": now.Add(a.cfg.TTL).Unix(),
	}
	for _, name := range a.cfg.Claims {
		switch name {
		case "sub":
			c["sub"] = s.Subject
		case "idp":
			c["idp"] = s.Issuer // the issuer of the IdP the user signed in with
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

// PublishedKeys are the public keys of one app's assertions, across
// asserters and config reloads: a key no live asserter signs with any
// more stays published until the tokens it signed have expired.
type PublishedKeys struct {
	mu      sync.Mutex
	current map[string]*liveKey // kid → key in use by live asserters
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

// NewPublishedKeys returns an empty key set.
func NewPublishedKeys() *PublishedKeys {
	return &PublishedKeys{current: map[string]*liveKey{}, retired: map[string]retiredKey{}}
}

// Destruct lets a usage pool hold the keys; there is nothing to free.
func (p *PublishedKeys) Destruct() error { return nil }

func (p *PublishedKeys) acquire(keys map[string]jose.JSONWebKey, ttl time.Duration) {
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

func (p *PublishedKeys) release(kids []string, now time.Time) {
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

// Set returns the keys to publish now, sorted by key id.
func (p *PublishedKeys) Set(now time.Time) jose.JSONWebKeySet {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
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

// LoadECKey reads an EC P-256 private key from a PEM file (SEC 1 or
// PKCS #8).
func LoadECKey(path string) (*ecdsa.PrivateKey, error) {
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
