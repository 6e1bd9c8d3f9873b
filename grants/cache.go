package grants

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Cache sits in front of a Store on each node, so that a warm user's
// request needs no store round trip while every change still takes
// effect within CacheTTL on every node.
//
// Every change announced by any node drops the affected entries at once.
// While the store's heartbeats keep arriving (they follow its events, see
// HeartbeatEvery), the cache has heard every change made up to the last
// heartbeat, so an entry is kept until an event drops it (at most
// LiveTTL). When they stop (the subscription died, or stalls without
// closing), entries fall back to CacheTTL from when they were read, and
// the mirror of revocations is reloaded every MirrorRetry until they come
// back.
//
// Revocations (of sessions, users and grants) are mirrored locally:
// loaded before the cache serves anything, again on reconnect and every
// MirrorEvery, and updated by events, so they hold while the store is
// unreachable; and when the store lacks one the mirror holds (a Redis
// failover lost it), the mirror writes it back.
//
// Store reads failing in a row (TripAfter of them, over TripAfterFor)
// open a circuit: until one probe at a time (every ProbeEvery) finds the
// store answering again, lookups that need the store answer at once with
// the mirror's revocations and ErrUnavailable, instead of each waiting the
// timeout. Concurrent reads of one user's session are
// made once.
type Cache struct {
	store   Store
	ttl     time.Duration
	liveTTL time.Duration
	timeout time.Duration
	now     func() time.Time
	// OnExpired is told, once per grant and node, that a user came back
	// after a grant of theirs expired ("expired on use").
	OnExpired func(Grant)
	// OnRestore is told when the mirror wrote back revocations the store
	// had lost, or failed to.
	OnRestore func(Revocations, error)

	mu       sync.RWMutex
	entries  map[string]*cacheEntry     // user key → state
	sessions map[sessionKey]int64       // revoked sessions → until
	keys     map[User]string            // User.Key, memoised (a SHA-256 each)
	users    map[string]int64           // user key → revoked at
	revoked  map[string]GrantRevocation // revoked grants by id
	idps     map[string]int64           // ended IdP sessions (IdPSession.Key) → until
	expired  map[string]int64           // grant ids already reported → expiry
	gen      uint64                     // bumped by every event and invalidation: a store read older than it is not cached
	ready    bool                       // the mirror was loaded once: until then nothing is served

	// resources are the resource revocations of access reviews, by user
	// key (reviews_mirror.go).
	resources map[string][]ResourceRevocation
	resGen    uint64 // bumped by every change to resources

	heard    atomic.Int64 // the latest heartbeat applied: sent at (Unix ns)
	reloaded atomic.Int64 // when the last mirror reload that succeeded started (Unix ns)
	failed   atomic.Int32 // store reads failed in a row
	failedAt atomic.Int64 // when the first of them failed (Unix ns; 0: none)
	open     atomic.Bool  // the circuit: the store failed, and no probe found it answering since
	probing  atomic.Bool  // one probe at a time
	flight   singleflight.Group

	refreshing sync.Mutex // one mirror refresh at a time
	stop       chan struct{}
	done       chan struct{}
}

type sessionKey struct{ user, sid string }

// parseSessionKey reads the stores' "user key/session id".
func parseSessionKey(s string) sessionKey {
	uk, sid, _ := strings.Cut(s, "/")
	return sessionKey{uk, sid}
}

type cacheEntry struct {
	grants        []Grant
	userRevokedAt int64
	fetched       time.Time
	sessions      []seenSession // a user's sessions checked within the TTL; usually one
}

// seenSession records when a session's revocation state was last read.
type seenSession struct {
	sid string
	at  time.Time
}

// seen reports when sid's revocation state was read (zero if never).
func (e *cacheEntry) seen(sid string) time.Time {
	for _, s := range e.sessions {
		if s.sid == sid {
			return s.at
		}
	}
	return time.Time{}
}

// Cache defaults.
const (
	// CacheTTL bounds how long a change takes to reach every node.
	CacheTTL = time.Second
	// LiveTTL bounds how long an entry is kept while heartbeats say that
	// every event was heard: the same as MirrorEvery, so that a change
	// whose announcement failed (the store reports it, see
	// RedisStore.announce) reaches every node within the same bound.
	LiveTTL     = 30 * time.Second
	MirrorEvery = 30 * time.Second
	// MirrorRetry is how often the mirror is reloaded while heartbeats
	// are missing: a revocation made elsewhere then still reaches this
	// node within CacheTTL.
	MirrorRetry = 100 * time.Millisecond
	// TripAfter store reads failing in a row, for at least TripAfterFor,
	// open the circuit: a slow moment (a pause, a burst that starves the
	// CPU) costs only the requests that waited for it, as any read that
	// succeeds in between ends the streak.
	TripAfter    = 3
	TripAfterFor = 100 * time.Millisecond
	// ProbeEvery is how often an open circuit probes the store.
	ProbeEvery = 100 * time.Millisecond
)

// errCircuitOpen is returned while the circuit is open.
var errCircuitOpen = fmt.Errorf("%w: it failed just now, and is probed every %s", ErrUnavailable, ProbeEvery)

// NewCache puts a cache in front of store. timeout bounds each store
// call made for a request.
func NewCache(store Store, timeout time.Duration) *Cache {
	c := &Cache{
		store: store, ttl: CacheTTL, liveTTL: LiveTTL, timeout: timeout, now: time.Now,
		entries: map[string]*cacheEntry{}, sessions: map[sessionKey]int64{}, users: map[string]int64{}, expired: map[string]int64{},
		keys: map[User]string{}, revoked: map[string]GrantRevocation{}, idps: map[string]int64{}, resources: map[string][]ResourceRevocation{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	c.refreshMirror()
	go c.run()
	return c
}

// Ready reports whether the mirror of revocations is loaded: a node that
// has not loaded it cannot tell a revoked session from a live one, and
// serves nothing (Lookup returns ErrNotReady).
func (c *Cache) Ready() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ready
}

// Store is the store behind the cache.
func (c *Cache) Store() Store { return c.store }

func (c *Cache) run() {
	defer close(c.done)
	t := time.NewTicker(MirrorEvery)
	defer t.Stop()
	// Until the mirror is loaded, and while heartbeats are missing, try
	// every MirrorRetry.
	retry := time.NewTicker(MirrorRetry)
	defer retry.Stop()
	events := c.store.Events()
	for {
		select {
		case <-c.stop:
			return
		case <-retry.C:
			if !c.Ready() || c.heard.Load() != 0 && !c.mirrorCurrent() {
				go c.tryRefreshMirror()
			}
		case <-t.C:
			go c.tryRefreshMirror()
		case e, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			c.apply(e)
		}
	}
}

// apply takes an event from any node into this node's cache.
func (c *Cache) apply(e Event) {
	if e.Kind == "heartbeat" {
		// A heartbeat says when it was sent, by this node's clock: one from
		// the future is forged or corrupt, and would keep the cache trusting
		// its entries long after heartbeats stopped.
		if e.At > c.heard.Load() && e.At <= c.now().UnixNano() {
			c.heard.Store(e.At)
		}
		return
	}
	c.mu.Lock()
	c.gen++
	switch e.Kind {
	case "session_revoked":
		c.sessions[sessionKey{e.UserKey, e.SessionID}] = e.At
	case "grant_revoked":
		c.revoked[e.GrantID] = GrantRevocation{UserKey: e.UserKey, Until: e.At, At: c.now().Unix()}
	case "user_revoked":
		if e.At > c.users[e.UserKey] {
			c.users[e.UserKey] = e.At
		}
	case "idp_session_revoked":
		if e.At > c.idps[e.SessionID] {
			c.idps[e.SessionID] = e.At
		}
	case "resync":
		c.entries = map[string]*cacheEntry{}
	case "resources":
		c.resGen++
	}
	delete(c.entries, e.UserKey)
	c.mu.Unlock()
	switch e.Kind {
	case "resync":
		go c.refreshMirror()
	case "resources":
		go c.reloadResources()
	}
}

// Live reports whether a heartbeat sent within the last CacheTTL was
// applied: every change made before then has been heard, so entries need
// no store round trip until an event drops them.
func (c *Cache) Live() bool {
	return c.now().UnixNano()-c.heard.Load() < int64(c.ttl)
}

// CircuitOpen reports whether lookups answer without asking the store,
// which failed.
func (c *Cache) CircuitOpen() bool { return c.open.Load() }

// mirrorCurrent reports whether the mirror holds every revocation made
// more than half a CacheTTL ago: heard through events, or read by a
// reload since.
func (c *Cache) mirrorCurrent() bool {
	return c.now().UnixNano()-max(c.heard.Load(), c.reloaded.Load()) < int64(c.ttl/2)
}

// tryRefreshMirror refreshes the mirror unless a refresh is running.
func (c *Cache) tryRefreshMirror() {
	if c.refreshing.TryLock() {
		defer c.refreshing.Unlock()
		c.reloadMirror()
	}
}

// refreshMirror refreshes the mirror, after the refresh under way if
// any: a resync needs one that starts after it.
func (c *Cache) refreshMirror() {
	c.refreshing.Lock()
	defer c.refreshing.Unlock()
	c.reloadMirror()
}

// reloadMirror reloads the revocations in force from the store, and
// writes back those the mirror holds and the store lost. The caller holds
// c.refreshing.
func (c *Cache) reloadMirror() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := c.now()
	c.mu.RLock()
	resGen := c.resGen
	c.mu.RUnlock()
	rv, err := c.store.Revocations(ctx, now)
	if err != nil {
		return
	}
	rr, err := c.store.ResourceRevocations(ctx)
	if err != nil {
		return
	}
	if lost := c.lost(rv, now); !lost.empty() {
		err := c.store.Restore(ctx, lost)
		if c.OnRestore != nil {
			c.OnRestore(lost, err)
		}
	}
	c.reloaded.Store(now.UnixNano())
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ready = true
	c.setResources(rr, resGen)
	for k, until := range rv.Sessions {
		c.sessions[parseSessionKey(k)] = until
	}
	for k, at := range rv.Users {
		if at > c.users[k] {
			c.users[k] = at
		}
	}
	for id, g := range rv.Grants {
		c.revoked[id] = g
	}
	for k, until := range rv.IdPSessions {
		if until > c.idps[k] {
			c.idps[k] = until
		}
	}
	for k, until := range c.idps {
		if until < now.Unix() {
			delete(c.idps, k)
		}
	}
	for k, until := range c.sessions {
		if until < now.Unix() {
			delete(c.sessions, k)
		}
	}
	for id, g := range c.revoked {
		if g.Until < now.Unix() {
			delete(c.revoked, id)
		}
	}
	// Stores return grants that expired up to recentlyExpired ago; forget
	// a report only after that, or it would be made again.
	for id, exp := range c.expired {
		if exp < now.Add(-recentlyExpired).Unix() {
			delete(c.expired, id)
		}
	}
	// Users who stopped coming: their entries are stale anyway.
	for k, e := range c.entries {
		if now.Sub(e.fetched) >= c.liveTTL {
			delete(c.entries, k)
		}
	}
	if len(c.keys) > len(c.entries)+1024 {
		clear(c.keys)
	}
}

// lost returns the revocations in force that the mirror holds and the
// store's rv lacks. Before the mirror is first loaded there is nothing to
// compare.
func (c *Cache) lost(rv Revocations, now time.Time) Revocations {
	out := newRevocations()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.ready {
		return out
	}
	for k, until := range c.sessions {
		key := k.user + "/" + k.sid
		if until > now.Unix() && rv.Sessions[key] == 0 {
			out.Sessions[key] = until
		}
	}
	for uk, at := range c.users {
		if at > rv.Users[uk] {
			out.Users[uk] = at
		}
	}
	for id, g := range c.revoked {
		if _, ok := rv.Grants[id]; !ok && g.Until > now.Unix() {
			out.Grants[id] = g
		}
	}
	for k, until := range c.idps {
		if until > now.Unix() && rv.IdPSessions[k] == 0 {
			out.IdPSessions[k] = until
		}
	}
	return out
}

func (rv Revocations) empty() bool {
	return len(rv.Sessions)+len(rv.Users)+len(rv.Grants)+len(rv.IdPSessions) == 0
}

// Lookup returns the user's active grants and whether the session is
// revoked. When the store cannot be read in time, it returns the error
// with no grants but the locally known revocations, so standing access
// can go on, JIT access cannot, and a revoked session stays revoked.
func (c *Cache) Lookup(ctx context.Context, u User, sid string, now time.Time) (State, error) {
	c.mu.RLock()
	uk, known := c.keys[u]
	if !known {
		c.mu.RUnlock()
		uk = u.Key()
		c.mu.Lock()
		c.keys[u] = uk
		c.mu.Unlock()
		c.mu.RLock()
	}
	sk := sessionKey{uk, sid}
	if !c.ready {
		c.mu.RUnlock()
		return State{}, ErrNotReady
	}
	e := c.entries[uk]
	mirror := State{UserRevokedAt: c.users[uk], SessionRevoked: c.sessions[sk] > 0}
	fresh := e != nil && c.fresh(e.fetched, now) && c.fresh(e.seen(sid), now)
	var st State
	if fresh {
		st = State{Grants: c.unrevoked(e.grants), UserRevokedAt: max(e.userRevokedAt, mirror.UserRevokedAt), SessionRevoked: mirror.SessionRevoked}
	}
	c.mu.RUnlock()
	if fresh {
		return c.active(st, e, now), nil
	}
	if c.open.Load() {
		c.probe(u, sid)
		return mirror, errCircuitOpen
	}
	got, gen, err := c.read(ctx, u, uk, sid, now)
	if err != nil {
		return mirror, err
	}
	c.mu.Lock()
	// An event that arrived while the store was read may have changed
	// what was read: answer with it, but do not cache it.
	cache := c.gen == gen
	prev := c.entries[uk]
	ne := &cacheEntry{grants: got.Grants, userRevokedAt: got.UserRevokedAt, fetched: now, sessions: []seenSession{{sid, now}}}
	if prev != nil {
		for _, s := range prev.sessions {
			if s.sid != sid && c.fresh(s.at, now) {
				ne.sessions = append(ne.sessions, s)
			}
		}
	}
	if cache {
		c.entries[uk] = ne
	}
	if got.SessionRevoked {
		if _, ok := c.sessions[sk]; !ok {
			c.sessions[sk] = now.Add(24 * time.Hour).Unix()
		}
	}
	if got.UserRevokedAt > c.users[uk] {
		c.users[uk] = got.UserRevokedAt
	}
	got.UserRevokedAt = max(got.UserRevokedAt, c.users[uk])
	got.SessionRevoked = got.SessionRevoked || c.sessions[sk] > 0
	got.Grants = c.unrevoked(got.Grants)
	c.mu.Unlock()
	c.reportExpired(got.Expired, nil, now)
	return got, nil
}

// fresh reports whether what was read at at may be served at now: read
// within CacheTTL, or within LiveTTL while heartbeats say that every
// change since was heard (and would have dropped it).
func (c *Cache) fresh(at, now time.Time) bool {
	if at.IsZero() {
		return false
	}
	age := now.Sub(at)
	return age < c.ttl || age < c.liveTTL && c.Live()
}

// read reads the user's state from the store, within the cache's timeout
// whatever the request's context: concurrent reads of one session share
// one store call, which a client that goes away does not cancel for the
// others. Failed reads (not callers) count towards opening the circuit.
// It returns the event generation from before the call: what was
// read may be cached only if no event came since. (The state is shared by
// the callers: nothing changes a State's Grants in place.)
func (c *Cache) read(ctx context.Context, u User, uk, sid string, now time.Time) (State, uint64, error) {
	v, err, _ := c.flight.Do(uk+"/"+sid, func() (any, error) {
		c.mu.RLock()
		gen := c.gen
		c.mu.RUnlock()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		st, err := c.store.Lookup(ctx, u, sid, now)
		c.count(err, u, sid)
		return flightResult{st, gen}, err
	})
	r, _ := v.(flightResult)
	return r.st, r.gen, err
}

type flightResult struct {
	st  State
	gen uint64
}

// count counts a store read's outcome towards opening the circuit.
func (c *Cache) count(err error, u User, sid string) {
	if err == nil {
		c.failed.Store(0)
		c.failedAt.Store(0)
		return
	}
	at := c.now().UnixNano()
	c.failedAt.CompareAndSwap(0, at)
	if c.failed.Add(1) >= TripAfter && at-c.failedAt.Load() >= int64(TripAfterFor) {
		c.trip(u, sid)
	}
}

// trip opens the circuit after store reads failed, and starts probing.
func (c *Cache) trip(u User, sid string) {
	c.open.Store(true)
	c.probe(u, sid)
}

// probe starts the one probe of an open circuit, unless it runs: it reads
// u's state every ProbeEvery until the store answers, then closes the
// circuit.
func (c *Cache) probe(u User, sid string) {
	if !c.probing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer c.probing.Store(false)
		t := time.NewTicker(ProbeEvery)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			_, err := c.store.Lookup(ctx, u, sid, c.now())
			cancel()
			if err == nil {
				c.count(nil, u, sid)
				c.open.Store(false)
				return
			}
		}
	}()
}

// unrevoked drops the grants the mirror knows are revoked (the store may
// have lost the revocation). The caller holds c.mu. It allocates only
// when it drops one.
func (c *Cache) unrevoked(gs []Grant) []Grant {
	if len(c.revoked) == 0 {
		return gs
	}
	for i := range gs {
		if _, ok := c.revoked[gs[i].ID]; ok {
			kept := make([]Grant, 0, len(gs))
			for _, g := range gs {
				if _, ok := c.revoked[g.ID]; !ok {
					kept = append(kept, g)
				}
			}
			return kept
		}
	}
	return gs
}

// active drops grants that expired since the entry was read.
func (c *Cache) active(st State, e *cacheEntry, now time.Time) State {
	for i := range st.Grants {
		if !st.Grants[i].Active(now) {
			kept := make([]Grant, 0, len(st.Grants))
			for _, g := range st.Grants {
				if g.Active(now) {
					kept = append(kept, g)
				}
			}
			c.reportExpired(st.Grants, kept, now)
			st.Grants = kept
			break
		}
	}
	return st
}

// reportExpired tells OnExpired about grants that were active before and
// have now expired (not revoked), once each.
func (c *Cache) reportExpired(before, after []Grant, now time.Time) {
	if c.OnExpired == nil {
		return
	}
	for _, g := range before {
		if g.RevokedAt != 0 || now.Unix() < g.ExpiresAt || containsGrant(after, g.ID) {
			continue
		}
		c.mu.Lock()
		_, seen := c.expired[g.ID]
		c.expired[g.ID] = g.ExpiresAt
		c.mu.Unlock()
		if !seen {
			c.OnExpired(g)
		}
	}
}

func containsGrant(gs []Grant, id string) bool {
	for i := range gs {
		if gs[i].ID == id {
			return true
		}
	}
	return false
}

// Invalidate drops what this node knows of a user (after it changed
// something itself; other nodes hear of it through events).
func (c *Cache) Invalidate(u User) {
	c.mu.Lock()
	c.gen++
	delete(c.entries, u.Key())
	c.mu.Unlock()
}

// NoteSessionRevoked records a revocation made by this node at once.
func (c *Cache) NoteSessionRevoked(u User, sid string, until time.Time) {
	c.apply(Event{Kind: "session_revoked", UserKey: u.Key(), SessionID: sid, At: until.Unix()})
}

// NoteGrantRevoked records a grant revocation made by this node at once.
func (c *Cache) NoteGrantRevoked(g Grant) {
	c.apply(Event{Kind: "grant_revoked", UserKey: g.User.Key(), GrantID: g.ID, At: g.ExpiresAt})
}

// NoteIdPSessionRevoked records an IdP session's end (a back-channel
// logout received by this node) at once.
func (c *Cache) NoteIdPSessionRevoked(s IdPSession, until time.Time) {
	c.apply(Event{Kind: "idp_session_revoked", SessionID: s.Key(), At: until.Unix()})
}

// IdPSessionRevoked reports whether the IdP session whose key is key
// (IdPSession.Key, as the session cookie records it) was ended by a
// back-channel logout. It reads the mirror only: no store round trip on
// the request path. The mirror holds every revocation in force before
// the node serves anything, takes each one from the store's events as it
// is made, and is reloaded on reconnect and every MirrorEvery.
func (c *Cache) IdPSessionRevoked(key string) bool {
	if key == "" {
		return false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.idps[key] > 0
}

// NoteUserRevoked records a user revocation made by this node at once.
func (c *Cache) NoteUserRevoked(u User, at time.Time) {
	c.apply(Event{Kind: "user_revoked", UserKey: u.Key(), At: at.Unix()})
}

// Close stops the cache and closes the store.
func (c *Cache) Close() error {
	select {
	case <-c.stop:
		return nil
	default:
	}
	close(c.stop)
	<-c.done
	return c.store.Close()
}

// Destruct lets a Cache live in a Caddy usage pool.
func (c *Cache) Destruct() error { return c.Close() }

// Ping checks that the store answers, within the cache's timeout. A
// store without Pinger (memory, embedded file) always does.
func (c *Cache) Ping(ctx context.Context) error {
	p, ok := c.store.(Pinger)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return p.Ping(ctx)
}
