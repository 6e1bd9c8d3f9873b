package authn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// KeyRefreshEvery is the least time between two fetches of an issuer's
// key set. A token that names a key the set does not hold triggers a
// fetch only when the last one is older; others are refused without one,
// so forged tokens with made-up key ids cannot make Gatehouse hammer the
// IdP (or whatever its jwks_uri points at).
const KeyRefreshEvery = 10 * time.Second

// ErrUnknownKey means no key of the issuer verifies a token, and the key
// set was fetched too recently to be fetched again.
var ErrUnknownKey = errors.New("authn: token signed by an unknown key (key set fetched less than 10 s ago)")

// signingAlgs are the asymmetric algorithms an ID token may use. HS* (a
// shared secret, or worse, the public key used as one) and none never are.
var signingAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// KeySet is an issuer's signing keys from its jwks_uri: fetched on first
// use, and again when a token names a key it does not hold, at most once
// per KeyRefreshEvery whatever the number of such tokens, with concurrent
// callers sharing one fetch. It implements go-oidc's KeySet.
type KeySet struct {
	url    string
	client *http.Client
	every  time.Duration

	mu       sync.Mutex
	keys     []jose.JSONWebKey
	last     time.Time     // when the last fetch started
	inFlight chan struct{} // closed when the fetch in flight ends
	fetches  atomic.Int64
}

// NewKeySet reads keys from jwksURL with client.
func NewKeySet(jwksURL string, client *http.Client) *KeySet {
	return &KeySet{url: jwksURL, client: client, every: KeyRefreshEvery}
}

// Fetches is how many times the key set was fetched.
func (k *KeySet) Fetches() int64 { return k.fetches.Load() }

// VerifySignature checks a compact JWS against the issuer's keys and
// returns its payload.
func (k *KeySet) VerifySignature(ctx context.Context, token string) ([]byte, error) {
	jws, err := jose.ParseSigned(token, signingAlgs)
	if err != nil {
		return nil, fmt.Errorf("authn: malformed token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("authn: a token must carry exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	if payload, ok := verifyWith(jws, kid, k.cached()); ok {
		return payload, nil
	}
	if err := k.refresh(ctx); err != nil {
		return nil, err
	}
	if payload, ok := verifyWith(jws, kid, k.cached()); ok {
		return payload, nil
	}
	return nil, errors.New("authn: no key of the issuer verifies the token")
}

func (k *KeySet) cached() []jose.JSONWebKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys
}

func verifyWith(jws *jose.JSONWebSignature, kid string, keys []jose.JSONWebKey) ([]byte, bool) {
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(&keys[i]); err == nil {
			return payload, true
		}
	}
	return nil, false
}

// refresh fetches the key set unless it was fetched less than k.every ago;
// a caller arriving while a fetch is in flight waits for that one.
func (k *KeySet) refresh(ctx context.Context) error {
	k.mu.Lock()
	if ch := k.inFlight; ch != nil {
		k.mu.Unlock()
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if !k.last.IsZero() && time.Since(k.last) < k.every {
		k.mu.Unlock()
		return ErrUnknownKey
	}
	k.last = time.Now()
	ch := make(chan struct{})
	k.inFlight = ch
	k.mu.Unlock()

	// The fetch is shared: it outlives the request that started it.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	keys, err := k.fetch(fctx)
	k.mu.Lock()
	if err == nil {
		k.keys = keys
	}
	k.inFlight = nil
	close(ch)
	k.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: key set %s: %v", ErrProviderUnavailable, k.url, err)
	}
	return nil
}

// fetch reads the key set, keeping the signing keys it can use and
// skipping others (encryption keys, unknown key types) rather than
// failing on them.
func (k *KeySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	k.fetches.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("not a key set: %v", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		if json.Unmarshal(raw, &key) != nil || !key.IsPublic() || (key.Use != "" && key.Use != "sig") {
			continue
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, errors.New("no signing key in the key set")
	}
	return keys, nil
}
