package authn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// ErrProviderUnavailable means the OpenID Provider could not be reached or
// gave an unusable answer. Users see a 502 page; it is retried.
var ErrProviderUnavailable = errors.New("authn: identity provider unavailable")

// discoveryRetry is how long a failed discovery is remembered before the
// next request tries again, so that a dead IdP is not hammered.
const discoveryRetry = 2 * time.Second

// Discovery fetches an issuer's OpenID configuration on first use (never at
// start-up, so Caddy starts and validates without the network), keeps it,
// and retries after failures. One Discovery serves every handler that names
// the same issuer.
type Discovery struct {
	issuer string
	client *http.Client
	// Now is the clock retries and reachability are judged by; nil is the
	// wall clock.
	Now func() time.Time

	meta     atomic.Pointer[Metadata]
	mu       sync.Mutex // serialises fetches
	failedAt time.Time
	failErr  error
	lastOK   atomic.Int64 // unix nanoseconds of the last good contact
	probe    sync.Mutex   // one reachability probe at a time
}

// reachableFor is how long a good contact with the IdP vouches for it:
// a login started later first checks the IdP still answers, so that users
// get a clear error page rather than a browser error on a dead IdP.
const reachableFor = 2 * time.Second

// Reachable reports whether the IdP answered recently, asking it again
// (its discovery document, within 2 s) when the last answer is older.
func (d *Discovery) Reachable(ctx context.Context) error {
	if d.clock().Sub(time.Unix(0, d.lastOK.Load())) < reachableFor {
		return nil
	}
	d.probe.Lock()
	defer d.probe.Unlock()
	if d.clock().Sub(time.Unix(0, d.lastOK.Load())) < reachableFor {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(d.issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrProviderUnavailable, err)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrProviderUnavailable, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: discovery answered %s", ErrProviderUnavailable, resp.Status)
	}
	d.markOK()
	return nil
}

func (d *Discovery) markOK() { d.lastOK.Store(d.clock().UnixNano()) }

// clock is the discovery's time: Now, or the wall clock.
func (d *Discovery) clock() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// Metadata is what Gatehouse uses of an issuer's discovery document.
type Metadata struct {
	Provider      *oidc.Provider
	EndSessionURL string
	// Keys are the issuer's signing keys, shared by every relying party
	// of the issuer, refreshed at most once per KeyRefreshEvery.
	Keys *KeySet
	// Algorithms are the ID-token signing algorithms the issuer uses and
	// Gatehouse accepts (asymmetric only; RS256 when it names none).
	Algorithms []string
	// IssResponse says the issuer names itself in every authorization
	// response (RFC 9207, authorization_response_iss_parameter_supported):
	// an answer without iss then cannot be from it.
	IssResponse bool
}

// NewDiscovery prepares discovery of issuer, fetched with client.
func NewDiscovery(issuer string, client *http.Client) *Discovery {
	return &Discovery{issuer: issuer, client: client}
}

// Get returns the issuer's metadata, fetching it if needed.
func (d *Discovery) Get(ctx context.Context) (*Metadata, error) {
	if m := d.meta.Load(); m != nil {
		return m, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if m := d.meta.Load(); m != nil {
		return m, nil
	}
	if d.failErr != nil && d.clock().Sub(d.failedAt) < discoveryRetry {
		return nil, d.failErr
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, d.client), d.issuer)
	if err != nil {
		d.failedAt, d.failErr = d.clock(), fmt.Errorf("%w: discovery of %s: %v", ErrProviderUnavailable, d.issuer, err)
		return nil, d.failErr
	}
	var extra struct {
		EndSession string   `json:"end_session_endpoint"`
		JWKSURI    string   `json:"jwks_uri"`
		Algs       []string `json:"id_token_signing_alg_values_supported"`
		IssResp    bool     `json:"authorization_response_iss_parameter_supported"`
	}
	if err := p.Claims(&extra); err != nil || extra.JWKSURI == "" {
		if err == nil {
			err = errors.New("no jwks_uri")
		}
		d.failedAt, d.failErr = d.clock(), fmt.Errorf("%w: discovery of %s: %v", ErrProviderUnavailable, d.issuer, err)
		return nil, d.failErr
	}
	var algs []string
	for _, a := range extra.Algs {
		if slices.Contains(signingAlgs, jose.SignatureAlgorithm(a)) {
			algs = append(algs, a)
		}
	}
	if len(algs) == 0 {
		algs = []string{string(jose.RS256)}
	}
	m := &Metadata{Provider: p, EndSessionURL: extra.EndSession, Keys: NewKeySet(extra.JWKSURI, d.client), Algorithms: algs,
		IssResponse: extra.IssResp}
	d.meta.Store(m)
	d.failErr = nil
	d.markOK()
	return m, nil
}

// Destruct lets a Discovery live in a Caddy usage pool.
func (d *Discovery) Destruct() error {
	d.client.CloseIdleConnections()
	return nil
}

// Issuer is the issuer URL discovered.
func (d *Discovery) Issuer() string { return d.issuer }

// Client is the HTTP client used to talk to the IdP.
func (d *Discovery) Client() *http.Client { return d.client }
