package grants

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

// cacheConformance is the part of the conformance suite about keeping
// the store off the hot path: with heartbeats coming, a warm entry needs
// no store round trip, and every change still reaches the cache within
// CacheTTL.
func cacheConformance(t *testing.T, open func(t *testing.T) Store) {
	t.Run("cache: warm entries need no store round trip while heartbeats come, and changes still land within a second", func(t *testing.T) {
		s := open(t)
		counting := &countingStore{Store: s}
		c := NewCache(counting, time.Second)
		t.Cleanup(func() { _ = c.Close() })
		waitLive(t, c)
		ctx := context.Background()
		u := User{Iss: "https://idp", Sub: "warm-" + newID()}
		now := time.Now()
		g, err := s.AddGrant(ctx, Grant{User: u, Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		landed(t, "the new grant", func() bool {
			st, err := c.Lookup(ctx, u, "s1", time.Now())
			return err == nil && len(st.Grants) == 1
		})
		// Once the grant's event is applied, the entry read next is kept.
		waitHeard(t, c, time.Now())
		_, _ = c.Lookup(ctx, u, "s1", time.Now())
		warmLookups(t, c, counting, 1500*time.Millisecond, func() {
			if st, err := c.Lookup(ctx, u, "s1", time.Now()); err != nil || len(st.Grants) != 1 {
				t.Fatalf("warm lookup: %+v %v", st, err)
			}
		})
		if _, err := s.RevokeGrant(ctx, g.ID, "ops", time.Now()); err != nil {
			t.Fatal(err)
		}
		landed(t, "the grant's revocation", func() bool {
			st, _ := c.Lookup(ctx, u, "s1", time.Now())
			return len(st.Grants) == 0
		})
		if err := s.RevokeSession(ctx, u, "s1", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		landed(t, "the session's revocation", func() bool {
			st, _ := c.Lookup(ctx, u, "s1", time.Now())
			return st.SessionRevoked
		})
	})
}

// warmLookups runs lookup every 50 ms for d, past CacheTTL, and fails
// the test if one read the store while the cache heard heartbeats before
// and after it. (A machine starved enough to delay heartbeats past a
// second makes the cache read again, rightly: those lookups are not
// counted, but most must have been made while live.)
func warmLookups(t *testing.T, c *Cache, counting *countingStore, d time.Duration, lookup func()) {
	t.Helper()
	var live, all int
	start := time.Now()
	for time.Since(start) < d {
		time.Sleep(50 * time.Millisecond)
		before, reads := c.Live(), counting.lookups.Load()
		lookup()
		if before && c.Live() {
			live++
			if n := counting.lookups.Load() - reads; n != 0 {
				t.Fatalf("a warm lookup %s into the run read the store while the cache heard heartbeats", time.Since(start).Round(time.Millisecond))
			}
		}
		all++
	}
	if live < all/2 {
		t.Fatalf("the cache heard heartbeats during %d of %d warm lookups", live, all)
	}
}

// waitLive waits until the cache has heard a heartbeat.
func waitLive(t *testing.T, c *Cache) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.Live() {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat from the store within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitHeard waits until the cache has applied a heartbeat sent after
// since: every event published before since has been applied.
func waitHeard(t *testing.T, c *Cache, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.heard.Load() <= since.UnixNano() {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat from the store within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// landed fails the test unless cond holds within CacheTTL (and a margin
// for a busy machine), and logs how long it took.
func landed(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > CacheTTL+500*time.Millisecond {
			t.Fatalf("%s did not reach the cache within %s", what, time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("%s reached the cache in %s", what, took.Round(time.Millisecond))
	return took
}

// deafStore hides the store's heartbeats from its cache.
type deafStore struct {
	Store
	events chan Event
}

func newDeafStore(s Store) *deafStore {
	d := &deafStore{Store: s, events: make(chan Event, 1024)}
	go func() {
		defer close(d.events)
		for e := range s.Events() {
			if e.Kind != "heartbeat" {
				d.events <- e
			}
		}
	}()
	return d
}

func (d *deafStore) Events() <-chan Event { return d.events }

func TestCacheWithoutHeartbeatsKeepsEntriesOneSecond(t *testing.T) {
	s := NewMemory()
	counting := &countingStore{Store: newDeafStore(s)}
	c := NewCache(counting, time.Second)
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	now := time.Now()
	for _, at := range []time.Duration{0, 900 * time.Millisecond, 1100 * time.Millisecond, 1500 * time.Millisecond, 2200 * time.Millisecond} {
		if _, err := c.Lookup(ctx, alice, "s1", now.Add(at)); err != nil {
			t.Fatal(err)
		}
	}
	if n := counting.lookups.Load(); n != 3 {
		t.Fatalf("store reads at 0, 0.9, 1.1, 1.5 and 2.2s: %d, want 3 (at 0, 1.1 and 2.2)", n)
	}
}

func TestCacheLiveEntriesExpireAfterLiveTTL(t *testing.T) {
	s := NewMemory()
	counting := &countingStore{Store: s}
	c := NewCache(counting, time.Second)
	t.Cleanup(func() { _ = c.Close() })
	waitLive(t, c)
	ctx := context.Background()
	now := time.Now()
	for _, at := range []time.Duration{0, 5 * time.Second, LiveTTL - time.Second, LiveTTL} {
		if _, err := c.Lookup(ctx, alice, "s1", now.Add(at)); err != nil {
			t.Fatal(err)
		}
	}
	// A second session of the same user is read once: its revocation
	// state was never read.
	_, _ = c.Lookup(ctx, alice, "s2", now.Add(LiveTTL))
	if n := counting.lookups.Load(); n != 3 {
		t.Fatalf("store reads: %d, want 3 (at 0, at LiveTTL, and the second session)", n)
	}
}

// failingStore stops answering lookups on demand.
type failingStore struct {
	Store
	down    atomic.Bool
	lookups atomic.Int64
}

func (f *failingStore) Lookup(ctx context.Context, u User, sid string, now time.Time) (State, error) {
	f.lookups.Add(1)
	if f.down.Load() {
		<-ctx.Done() // a store that does not answer: the caller's timeout
		return State{}, ErrUnavailable
	}
	return f.Store.Lookup(ctx, u, sid, now)
}

func TestCacheCircuitAnswersAtOnceDuringAnOutage(t *testing.T) {
	s := NewMemory()
	f := &failingStore{Store: newDeafStore(s)} // entries last CacheTTL: each lookup below needs the store
	const timeout = 100 * time.Millisecond
	c := NewCache(f, timeout)
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	now := time.Now()
	_ = s.RevokeSession(ctx, alice, "revoked", now.Add(time.Hour))
	c.refreshMirror()
	f.down.Store(true)
	// The first TripAfter lookups wait for the store (a slow moment is
	// not an outage)…
	if TripAfterFor > (TripAfter-1)*timeout {
		t.Fatalf("the test's timeout %s is too short for TripAfterFor %s", timeout, TripAfterFor)
	}
	for i := range TripAfter {
		start := time.Now()
		if _, err := c.Lookup(ctx, alice, "s1", now.Add(2*time.Second)); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("lookup %d in the outage: %v", i, err)
		}
		if took := time.Since(start); took < timeout {
			t.Fatalf("lookup %d in the outage waited %s, less than the timeout: was the store asked?", i, took)
		}
		if open := c.open.Load(); open != (i == TripAfter-1) {
			t.Fatalf("after %d failed reads, the circuit is open: %v", i+1, open)
		}
	}
	// …then the circuit is open: lookups answer at once, from the mirror.
	reads := f.lookups.Load()
	var slowest time.Duration
	for i := range 200 {
		start := time.Now()
		st, err := c.Lookup(ctx, alice, "revoked", now.Add(time.Duration(3+i)*time.Second))
		slowest = max(slowest, time.Since(start))
		if !errors.Is(err, ErrUnavailable) || !st.SessionRevoked || len(st.Grants) != 0 {
			t.Fatalf("lookup with the circuit open: %+v %v", st, err)
		}
	}
	if slowest > timeout/2 {
		t.Fatalf("the slowest of 200 lookups with the circuit open took %s", slowest)
	}
	t.Logf("slowest of 200 lookups with the circuit open: %s", slowest)
	// One probe at a time: over 600 ms, no more than one every
	// ProbeEvery (each waits the timeout), whatever the requests.
	time.Sleep(600 * time.Millisecond)
	if n := f.lookups.Load() - reads; n > int64(600*time.Millisecond/ProbeEvery)+1 {
		t.Fatalf("%d store reads in 600ms with the circuit open, want one probe every %s", n, ProbeEvery)
	}
	// The store is back: the probe closes the circuit.
	f.down.Store(false)
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := c.Lookup(ctx, alice, "s1", time.Now().Add(time.Hour)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the circuit did not close within 2s of the store answering again")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// blockingStore holds every lookup until release is closed.
type blockingStore struct {
	Store
	release chan struct{}
	lookups atomic.Int64
}

func (b *blockingStore) Lookup(ctx context.Context, u User, sid string, now time.Time) (State, error) {
	b.lookups.Add(1)
	<-b.release
	return b.Store.Lookup(ctx, u, sid, now)
}

func TestCacheConcurrentColdLookupsReadOnce(t *testing.T) {
	s := NewMemory()
	b := &blockingStore{Store: s, release: make(chan struct{})}
	c := NewCache(b, 5*time.Second)
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	now := time.Now()
	_, _ = s.AddGrant(ctx, Grant{User: alice, Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
	var wg sync.WaitGroup
	got := make(chan int, 50)
	for range 50 {
		wg.Go(func() {
			st, err := c.Lookup(ctx, alice, "s1", now)
			if err != nil {
				t.Error(err)
			}
			got <- len(st.Grants)
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.lookups.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the others join the read under way
	close(b.release)
	wg.Wait()
	close(got)
	for n := range got {
		if n != 1 {
			t.Fatalf("a lookup saw %d grants, want 1", n)
		}
	}
	if n := b.lookups.Load(); n != 1 {
		t.Fatalf("50 concurrent cold lookups of one session read the store %d times, want 1", n)
	}
}

func TestBroadcasterOverflowSendsResync(t *testing.T) {
	b := newBroadcaster()
	for range cap(b.ch) + 3 {
		b.send(Event{Kind: "user", UserKey: "u"})
	}
	for range cap(b.ch) {
		<-b.ch
	}
	b.send(Event{Kind: "heartbeat", At: 1})
	if e := <-b.ch; e.Kind != "resync" {
		t.Fatalf("after a drop, the first event delivered is %q, want resync", e.Kind)
	}
	if e := <-b.ch; e.Kind != "heartbeat" {
		t.Fatalf("then %q, want the heartbeat", e.Kind)
	}
}

// TestRedisStalledSubscription stalls a node's subscription to the
// store's events silently (a proxy stops forwarding it without closing
// it): revocations made elsewhere still reach the node within a second.
func TestRedisStalledSubscription(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	p := redistest.StartProxy(t, r.Addr())
	other, err := OpenRedis(r.URL(), RedisOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	node, err := OpenRedis("redis://"+p.Addr()+"/0", RedisOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingStore{Store: node}
	c := NewCache(counting, time.Second)
	t.Cleanup(func() { _ = c.Close() })
	waitLive(t, c)
	ctx := context.Background()
	u := User{Iss: "https://idp", Sub: "stalled"}
	now := time.Now()
	g1, _ := other.AddGrant(ctx, Grant{User: u, Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
	g2, _ := other.AddGrant(ctx, Grant{User: u, Resource: "wiki", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
	landed(t, "the grants", func() bool {
		st, _ := c.Lookup(ctx, u, "s1", time.Now())
		return len(st.Grants) == 2
	})
	waitHeard(t, c, time.Now())
	_, _ = c.Lookup(ctx, u, "s1", time.Now())
	warmLookups(t, c, counting, 1500*time.Millisecond, func() {
		if st, err := c.Lookup(ctx, u, "s1", time.Now()); err != nil || len(st.Grants) != 2 {
			t.Fatalf("warm lookup: %+v %v", st, err)
		}
	})

	p.StallSubscriptions(true)
	if p.Subscriptions() == 0 {
		t.Fatal("the proxy saw no subscription connection")
	}
	if _, err := other.RevokeGrant(ctx, g1.ID, "ops", time.Now()); err != nil {
		t.Fatal(err)
	}
	landed(t, "a grant's revocation, with the subscription stalled", func() bool {
		st, _ := c.Lookup(ctx, u, "s1", time.Now())
		return len(st.Grants) == 1 && st.Grants[0].ID == g2.ID
	})
	g3, err := other.AddGrant(ctx, Grant{User: u, Resource: "crm", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	landed(t, "a new grant (an approval), with the subscription stalled", func() bool {
		st, _ := c.Lookup(ctx, u, "s1", time.Now())
		return containsGrant(st.Grants, g3.ID)
	})
	idp := IdPSession{Iss: "https://idp", SID: "idp-1"}
	if err := other.RevokeIdPSession(ctx, idp, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	landed(t, "an IdP session's end (the mirror only), with the subscription stalled", func() bool {
		return c.IdPSessionRevoked(idp.Key())
	})
	if err := other.RevokeUser(ctx, u, time.Now()); err != nil {
		t.Fatal(err)
	}
	landed(t, "a user's revocation, with the subscription stalled", func() bool {
		st, _ := c.Lookup(ctx, u, "s1", time.Now())
		return st.UserRevokedAt > 0
	})
	if c.Live() {
		t.Fatal("the cache still hears heartbeats through a stalled subscription")
	}

	// Resumed (or reconnected): heartbeats come back, and warm entries
	// are kept again.
	p.StallSubscriptions(false)
	waitLive(t, c)
}

func TestCacheCircuitIgnoresASlowMoment(t *testing.T) {
	s := NewMemory()
	f := &failingStore{Store: newDeafStore(s)}
	c := NewCache(f, 10*time.Millisecond)
	t.Cleanup(func() { _ = c.Close() })
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	c.now = func() time.Time { return time.Unix(0, clock.Load()) }
	ctx := context.Background()
	at := time.Now()
	fail := func(n int) {
		for range n {
			at = at.Add(2 * time.Second) // past the entry's TTL: each lookup reads the store
			_, _ = c.Lookup(ctx, alice, "s1", at)
		}
	}
	f.down.Store(true)
	fail(5) // many failures within TripAfterFor: a slow moment
	if c.CircuitOpen() {
		t.Fatal("5 reads failing within a moment opened the circuit")
	}
	f.down.Store(false)
	fail(1) // a read that succeeds ends the streak
	f.down.Store(true)
	clock.Add(int64(TripAfterFor))
	fail(TripAfter - 1)
	if c.CircuitOpen() {
		t.Fatal("the circuit opened on a streak a success had ended")
	}
	clock.Add(int64(TripAfterFor))
	fail(1)
	if !c.CircuitOpen() {
		t.Fatalf("%d reads failing over %s did not open the circuit", TripAfter, 2*TripAfterFor)
	}
}

// A heartbeat from the future (forged by anyone who may publish on the
// events channel, or a corrupt message) must not make the cache trust
// its entries after heartbeats stop.
func TestCacheIgnoresHeartbeatsFromTheFuture(t *testing.T) {
	s := NewMemory()
	c := NewCache(newDeafStore(s), time.Second)
	t.Cleanup(func() { _ = c.Close() })
	c.apply(Event{Kind: "heartbeat", At: time.Now().Add(time.Hour).UnixNano()})
	if c.Live() {
		t.Fatal("a heartbeat sent an hour from now made the cache live")
	}
	c.apply(Event{Kind: "heartbeat", At: time.Now().UnixNano()})
	if !c.Live() {
		t.Fatal("a heartbeat sent now did not make the cache live")
	}
}
