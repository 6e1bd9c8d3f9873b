package module

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// Usage pools share what outlives one handler instance across sites and
// config reloads: per issuer, the IdP's discovery cache, HTTP client and
// used login states; per store URL, one grant store and its cache (one
// Redis pool, one bbolt file handle); per policy directory, one watched
// engine; per app, the published assertion keys.
var (
	idps          = caddy.NewUsagePool()
	grantStores   = caddy.NewUsagePool()
	policyEngines = caddy.NewUsagePool()
	assertionKeys = caddy.NewUsagePool()
)

// pooled is a usage-pool entry a handler holds, released at Cleanup.
type pooled struct {
	pool *caddy.UsagePool
	key  string
}

// share loads (or makes) a pool entry and remembers to release it.
func (h *Handler) share(pool *caddy.UsagePool, key string, make func() (caddy.Destructor, error)) (any, bool, error) {
	val, loaded, err := pool.LoadOrNew(key, make)
	if err != nil {
		return nil, false, err
	}
	h.pooled = append(h.pooled, pooled{pool, key})
	return val, loaded, nil
}

// idpEntry is an IdP's shared state.
type idpEntry struct{ gate.IdP }

func (e *idpEntry) Destruct() error { return e.Discovery.Destruct() }

// idp returns the shared state of the IdP at issuer.
func (h *Handler) idp(issuer string) (gate.IdP, error) {
	val, _, err := h.share(idps, issuer, func() (caddy.Destructor, error) {
		return &idpEntry{gate.IdP{Discovery: authn.NewDiscovery(issuer, newIdPClient()), Used: authn.NewUsedStates()}}, nil
	})
	if err != nil {
		return gate.IdP{}, err
	}
	return val.(*idpEntry).IdP, nil
}

// newIdPClient returns the HTTP client for discovery, keys and token
// exchange: every step is bounded, so a slow IdP cannot pin requests.
func newIdPClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   8,
			ForceAttemptHTTP2:     true,
		},
	}
}

var redisLogOnce sync.Once

// grantCache returns the shared grant store of the grants directive
// (memory: without one) and its cache. The store's own events (a grant
// that expired in use, revocations written back after a failover) go to
// the audit log.
func (h *Handler) grantCache() (*grants.Cache, error) {
	url := h.Grants
	if url == "" {
		url = "memory:"
	}
	timeout := time.Duration(h.GrantsTimeout)
	redisLogOnce.Do(func() { redis.SetLogger(redisLogger{}) })
	// The admin API finds a store by the part of the key before \x00.
	val, loaded, err := h.share(grantStores, url+"\x00"+timeout.String(), func() (caddy.Destructor, error) {
		s, err := grants.Open(url, timeout)
		if err != nil {
			return nil, err
		}
		c := grants.NewCache(grants.Observe(s, storeObserver(storeLabel(url))), timeout)
		audit := zap.New(caddyCore{name: auditLogger})
		c.OnRestore = func(lost grants.Revocations, err error) {
			fields := []zap.Field{zap.Int("sessions", len(lost.Sessions)), zap.Int("users", len(lost.Users)), zap.Int("grants", len(lost.Grants)),
				zap.Int("idp_sessions", len(lost.IdPSessions))}
			if err != nil {
				audit.Error(gate.EventRevocationsLost, append(fields, zap.Error(err))...)
				return
			}
			audit.Warn(gate.EventRevocationsKept, fields...)
		}
		c.OnExpired = func(g grants.Grant) {
			e := gate.GrantEvent(gate.EventGrantExpired, &g, "", "its time ran out while in use")
			writeEvents(audit, g.App, e)
			recordHistory(audit, c.Store(), g.App, []gate.Event{e})
		}
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("gatehouse: grants %s: %w", redactURL(h.Grants), err)
	}
	c := val.(*grants.Cache)
	if !loaded {
		h.describeStore(url, c)
	}
	return c, nil
}

// describeStore says at start which store is in use, and warns about a
// Redis that can lose data.
func (h *Handler) describeStore(url string, c *grants.Cache) {
	switch {
	case url == "memory:" && h.Policy == "":
		// Without a policy nothing grants or requests access; only
		// logouts are recorded, on this node.
		h.logger.Info("grant store in memory: logouts are recorded on this node until it restarts (set grants file:///… or redis://… for JIT access)")
	case url == "memory:":
		h.logger.Warn("grant store in memory: one node only; grants, access requests and revocations are lost on restart (set grants file:///… or redis://…)")
	case strings.HasPrefix(url, "file://"):
		h.logger.Info("grant store: embedded file (one node)", zap.String("url", url))
	default:
		h.logger.Info("grant store: Redis", zap.String("url", redactURL(url)))
		store := c.Store()
		if o, ok := store.(interface{ Unwrap() grants.Store }); ok {
			store = o.Unwrap()
		}
		if rs, ok := store.(*grants.RedisStore); ok {
			logger := h.logger
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if on, err := rs.AppendOnly(ctx); err == nil && !on {
					logger.Warn("Redis runs without appendonly yes: a Redis restart can lose grants and revocations")
				}
			}()
		}
	}
}

// redactURL hides a password in a store URL for logs and errors.
func redactURL(s string) string {
	if i := strings.Index(s, "@"); i > 0 {
		if j := strings.Index(s, "://"); j > 0 && j < i {
			return s[:j+3] + "REDACTED" + s[i:]
		}
	}
	return s
}

// redisLogger sends go-redis's own messages (reconnects, dial failures)
// to Caddy's log at debug level: outages are reported once, by Gatehouse.
type redisLogger struct{}

func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	caddy.Log().Named("http.handlers.gatehouse.redis").Debug(fmt.Sprintf(format, v...))
}

// policyEngine returns the shared, watched engine of the policy
// directory, or nil without one.
func (h *Handler) policyEngine() (*policies.Engine, error) {
	if h.Policy == "" {
		return nil, nil
	}
	dir, err := filepath.Abs(h.Policy)
	if err != nil {
		return nil, fmt.Errorf("gatehouse: policy: %v", err)
	}
	opts := policies.Options{Query: h.PolicyQuery, Timeout: time.Duration(h.PolicyTimeout), CacheSize: h.PolicyCache}
	key := fmt.Sprintf("%s\x00%s\x00%s\x00%d", dir, opts.Query, opts.Timeout, opts.CacheSize)
	val, _, err := h.share(policyEngines, key, func() (caddy.Destructor, error) {
		return policies.NewEngine(dir, opts, zap.New(caddyCore{name: "http.handlers.gatehouse.policy"}))
	})
	if err != nil {
		return nil, fmt.Errorf("gatehouse: policy %s: %w", h.Policy, err)
	}
	return val.(*policies.Engine), nil
}

// publishedKeys returns the app's published assertion keys. They outlive
// config reloads (a reload provisions the new handler before it cleans
// up the old one), so a rotated key stays published until the tokens it
// signed have expired.
func (h *Handler) publishedKeys() (*authn.PublishedKeys, error) {
	val, _, err := h.share(assertionKeys, h.App, func() (caddy.Destructor, error) {
		return authn.NewPublishedKeys(), nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*authn.PublishedKeys), nil
}

// caddyCore writes through Caddy's current default logger, whatever config
// is loaded: a pooled engine or store outlives the config that created it.
type caddyCore struct {
	name   string
	fields []zapcore.Field
}

func (c caddyCore) core() zapcore.Core {
	return caddy.Log().Named(c.name).Core().With(c.fields)
}
func (c caddyCore) Enabled(l zapcore.Level) bool { return c.core().Enabled(l) }
func (c caddyCore) With(f []zapcore.Field) zapcore.Core {
	return caddyCore{name: c.name, fields: append(append([]zapcore.Field(nil), c.fields...), f...)}
}
func (c caddyCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	e.LoggerName = c.name
	return c.core().Check(e, ce)
}
func (c caddyCore) Write(e zapcore.Entry, f []zapcore.Field) error { return c.core().Write(e, f) }
func (c caddyCore) Sync() error                                    { return c.core().Sync() }
