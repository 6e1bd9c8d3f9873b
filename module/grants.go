package module

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// grantStores shares one store and cache per URL across handler instances
// and config reloads: one Redis pool, one bbolt file handle.
var grantStores = caddy.NewUsagePool()

// offerTTL is how long a deny page's request form stays valid.
const offerTTL = 15 * time.Minute

var redisLogOnce sync.Once

func (h *Handler) provisionGrants() error {
	url := h.Grants
	if url == "" {
		url = "memory:"
	}
	timeout := time.Duration(h.GrantsTimeout)
	h.storeKey = url + "\x00" + timeout.String()
	redisLogOnce.Do(func() { redis.SetLogger(redisLogger{}) })
	val, loaded, err := grantStores.LoadOrNew(h.storeKey, func() (caddy.Destructor, error) {
		s, err := grants.Open(url, timeout)
		if err != nil {
			return nil, err
		}
		c := grants.NewCache(s, timeout)
		audit := zap.New(caddyCore{name: "http.handlers.gatehouse.audit"})
		c.OnRestore = func(lost grants.Revocations, err error) {
			fields := []zap.Field{zap.Int("sessions", len(lost.Sessions)), zap.Int("users", len(lost.Users)), zap.Int("grants", len(lost.Grants))}
			if err != nil {
				audit.Error("revocations lost by the store could not be written back", append(fields, zap.Error(err))...)
				return
			}
			audit.Warn("revocations lost by the store written back from this node's mirror", fields...)
		}
		c.OnExpired = func(g grants.Grant) {
			audit.Info("grant expired", zap.String("event", "expired-on-use"), zap.String("grant_id", g.ID),
				zap.String("user", g.User.Sub), zap.String("email", g.Email), zap.String("app", g.App),
				zap.String("resource", g.Resource), zap.Time("until", time.Unix(g.ExpiresAt, 0)))
		}
		return c, nil
	})
	if err != nil {
		return fmt.Errorf("gatehouse: grants %s: %w", h.Grants, err)
	}
	h.cache = val.(*grants.Cache)
	h.grantsDown = new(atomic.Bool)
	if loaded {
		return nil
	}
	switch {
	case url == "memory:":
		h.logger.Warn("grant store in memory: one node only; grants, access requests and revocations are lost on restart (set grants file:///… or redis://…)")
	case strings.HasPrefix(url, "file://"):
		h.logger.Info("grant store: embedded file (one node)", zap.String("url", url))
	default:
		h.logger.Info("grant store: Redis", zap.String("url", redactURL(url)))
		if rs, ok := h.cache.Store().(*grants.RedisStore); ok {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if on, err := rs.AppendOnly(ctx); err == nil && !on {
					h.logger.Warn("Redis runs without appendonly yes: a Redis restart can lose grants and revocations")
				}
			}()
		}
	}
	return nil
}

// redactURL hides a password in a store URL for logs.
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

func (h *Handler) user(s *authn.Session) grants.User {
	return grants.User{Iss: h.Issuer, Sub: s.Subject}
}

// lookupGrants is pipeline step 5: the user's grants and revocation
// state, from the node's cache, within grants_timeout. A store error is
// reported as grantsError; the log says when the store becomes
// unreachable and when it is back, not once per request in between. A
// client that went away is not the store's fault.
func (h *Handler) lookupGrants(ctx context.Context, s *authn.Session, now time.Time) (st grants.State, grantsError bool) {
	st, err := h.cache.Lookup(ctx, h.user(s), s.ID, now)
	if err != nil {
		if ctx.Err() == nil && h.grantsDown.CompareAndSwap(false, true) {
			h.logger.Warn("grant store unavailable: JIT access refused, revocations from the local mirror", zap.Error(err))
		}
		return st, true
	}
	if h.grantsDown.Load() && h.grantsDown.CompareAndSwap(true, false) {
		h.logger.Info("grant store reachable again")
	}
	return st, false
}

// policyGrants turns active grants into the policy input's.
func policyGrants(gs []grants.Grant) []policies.Grant {
	out := make([]policies.Grant, len(gs))
	for i, g := range gs {
		out[i] = policies.Grant{Resource: g.Resource, ExpiresAt: g.ExpiresAt, ApprovedBy: g.ApprovedBy}
	}
	return out
}

func grantResources(gs []grants.Grant) []string {
	out := make([]string, 0, len(gs))
	for _, g := range gs {
		out = append(out, g.Resource)
	}
	sort.Strings(out)
	return out
}

// auditGrant writes one grant event: who did what, for whom, why, until
// when.
func (h *Handler) auditGrant(event string, d *decision, fields ...zap.Field) {
	base := []zap.Field{zap.String("decision_id", d.ID()), zap.String("app", h.App), zap.String("actor", d.user)}
	h.auditLog.Info(event, append(base, fields...)...)
}

func grantFields(g *grants.Grant) []zap.Field {
	return []zap.Field{zap.String("grant_id", g.ID), zap.String("user", g.User.Sub), zap.String("email", g.Email),
		zap.String("resource", g.Resource), zap.String("reason", g.Reason), zap.String("approved_by", g.ApprovedBy),
		zap.Time("until", time.Unix(g.ExpiresAt, 0))}
}

func requestFields(r *grants.Request) []zap.Field {
	return []zap.Field{zap.String("request_id", r.ID), zap.String("user", r.User.Sub), zap.String("email", r.Email),
		zap.String("resource", r.Resource), zap.String("reason", r.Reason), zap.Duration("duration", time.Duration(r.Duration)*time.Second)}
}

// revokeSession records the logout of a session in the store, so a copy
// of its cookie is dead on every node. It is in this node's mirror at
// once, which writes it back to the store if recording it fails now.
func (h *Handler) revokeSession(ctx context.Context, s *authn.Session) error {
	until := h.lifetimes.Expires(s).Add(expiredGrace)
	u := h.user(s)
	h.cache.NoteSessionRevoked(u, s.ID, until)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if err := h.cache.Store().RevokeSession(ctx, u, s.ID, until); err != nil {
		h.logger.Error("the logout is not recorded durably in the grant store: it holds on this node, which writes it back when the store can take it",
			zap.String("user", s.Subject), zap.Error(err))
		return err
	}
	return nil
}
