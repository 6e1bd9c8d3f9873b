package gate

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// Usage, recorded cheaply: every allowed request of a signed-in user
// counts, per user and resource, in a map in memory; a background
// goroutine writes the counts to the grant store every UsageFlushEvery
// (no store call on the request path). A crash loses at most that much.
// The map holds at most UsageMaxEntries users × resources: when it is
// full, a write is started at once and new pairs are not counted until
// it is done (existing ones still are).

// Usage recording bounds.
const (
	UsageFlushEvery = 5 * time.Second
	UsageMaxEntries = 50000
	// UsageOther names the resource of a request whose path's first
	// segment cannot be a resource name (too long, control characters,
	// braces or '|').
	UsageOther = "(other)"
)

// usageKey is one counter: who, what, and whether through a grant. Its
// strings are the session's and the decision's own (or a slice of the
// request's path): making the key allocates nothing.
type usageKey struct {
	iss, sub, resource string
	grant              bool
}

type usageCount struct {
	email string
	count int64
	last  int64
}

// usageRecorder counts allowed requests and writes them to the store.
type usageRecorder struct {
	app   string
	store func() grants.Store
	max   int
	log   *zap.Logger

	mu      sync.Mutex
	counts  map[usageKey]usageCount
	spare   map[usageKey]usageCount // the other map, empty: the two take turns
	dropped int64                   // new pairs not counted since the last write (the map was full)
	full    chan struct{}           // a write is wanted now

	flushing sync.Mutex // one write at a time
	failing  bool       // the last write failed: log changes, not every write
}

func newUsageRecorder(app string, store func() grants.Store, max int, log *zap.Logger) *usageRecorder {
	size := min(max, 1024)
	return &usageRecorder{app: app, store: store, max: max, log: log, full: make(chan struct{}, 1),
		counts: make(map[usageKey]usageCount, size), spare: make(map[usageKey]usageCount, size)}
}

// note counts one allowed request of s to resource at now.
func (r *usageRecorder) note(s *authn.Session, resource string, grant bool, now int64) {
	k := usageKey{iss: s.Issuer, sub: s.Subject, resource: resource, grant: grant}
	r.mu.Lock()
	c, ok := r.counts[k]
	if !ok && len(r.counts) >= r.max {
		r.dropped++
		r.mu.Unlock()
		select {
		case r.full <- struct{}{}:
		default:
		}
		return
	}
	c.count++
	c.last = max(c.last, now)
	if c.email == "" {
		c.email = s.Email
	}
	r.counts[k] = c
	r.mu.Unlock()
}

// flush writes what was counted since the last write. What the store
// does not take is counted again (as far as the map has room), and
// written with the next.
func (r *usageRecorder) flush(ctx context.Context) {
	r.flushing.Lock()
	defer r.flushing.Unlock()
	r.mu.Lock()
	taken, dropped := r.counts, r.dropped
	r.counts, r.spare, r.dropped = r.spare, nil, 0
	r.mu.Unlock()
	defer func() {
		clear(taken)
		r.mu.Lock()
		r.spare = taken
		r.mu.Unlock()
	}()
	if dropped > 0 {
		r.log.Warn("usage records dropped: more users × resources than the usage map holds between two writes",
			zap.String("app", r.app), zap.Int64("requests", dropped), zap.Int("max", r.max))
	}
	if len(taken) == 0 {
		return
	}
	us := make([]grants.Usage, 0, len(taken))
	for k, c := range taken {
		via := grants.ViaStanding
		if k.grant {
			via = grants.ViaGrant
		}
		us = append(us, grants.Usage{App: r.app, User: grants.User{Iss: k.iss, Sub: k.sub}, Email: c.email, Resource: k.resource,
			Via: via, Count: c.count, Last: c.last})
	}
	err := r.store().AddUsage(ctx, us)
	if err == nil {
		if r.failing {
			r.failing = false
			r.log.Info("usage records written again", zap.String("app", r.app))
		}
		return
	}
	if !r.failing {
		r.failing = true
		r.log.Warn("usage records not written: kept for the next write", zap.String("app", r.app), zap.Error(err))
	}
	r.mu.Lock()
	for k, c := range taken {
		cur, ok := r.counts[k]
		if !ok && len(r.counts) >= r.max {
			continue
		}
		cur.count += c.count
		cur.last = max(cur.last, c.last)
		if cur.email == "" {
			cur.email = c.email
		}
		r.counts[k] = cur
	}
	r.mu.Unlock()
}

// run writes every UsageFlushEvery, and at once when the map is full,
// until stop; then it writes what is left.
func (r *usageRecorder) run(stop <-chan struct{}) {
	t := time.NewTicker(UsageFlushEvery)
	defer t.Stop()
	write := func() {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		defer cancel()
		r.flush(ctx)
	}
	for {
		select {
		case <-stop:
			write()
			return
		case <-t.C:
			write()
		case <-r.full:
			write()
		}
	}
}

// usageResource names what an allowed request used: the policy's
// resource, else the first segment of the canonical path ("/payslips",
// "/" for the root), as the policy library names it too.
func usageResource(policyResource, path string) string {
	if policyResource != "" {
		return policyResource
	}
	seg := path
	if len(seg) > 0 && seg[0] == '/' {
		if i := strings.IndexByte(seg[1:], '/'); i >= 0 {
			seg = seg[:i+1]
		}
	}
	seg = strings.ToLower(seg) // no allocation when it is lowercase already
	if !grants.UsageName(seg) {
		return UsageOther
	}
	return seg
}

// noteUsage counts an allowed request of a session (pipeline step 9).
func (g *Gate) noteUsage(s *authn.Session, policyResource, path string, gs []grants.Grant, now time.Time) {
	res := usageResource(policyResource, path)
	g.usage.note(s, res, viaGrant(gs, res), now.Unix())
}

// viaGrant reports whether the user's active grants include resource.
func viaGrant(gs []grants.Grant, resource string) bool {
	for i := range gs {
		if gs[i].Resource == resource {
			return true
		}
	}
	return false
}
