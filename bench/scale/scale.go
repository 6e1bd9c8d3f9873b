package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse-proxy/gatehouse/grants"
)

type config struct {
	users, pending, sessions, lookups int
}

// batch is how many records one grants.Import writes: one bbolt
// transaction, or one pipeline per Redis connection.
const batch = 5000

// storeFigures are one store's measurements.
type storeFigures struct {
	name                        string
	size                        []int64 // after the grants, the requests, the session revocations (bytes)
	fill                        time.Duration
	lookup, cacheMiss, cacheHit latencies
	pendingList, allGrants      time.Duration
	pendingListed, grantsListed int
	mirrorBytes, entryBytes     int64 // a grants.Cache: its mirror of the revocations, its entries (all)
}

type latencies struct{ p50, p99 time.Duration }

type figures struct {
	c       config
	grantSz int // bytes of one grant's JSON
	stores  []storeFigures
	heap    uint64 // the Go heap with both stores open and filled
}

// measure fills a Redis at redisAddr and a bbolt file in dir, and
// measures both; progress goes to log.
func measure(ctx context.Context, c config, redisAddr, dir string, log io.Writer) (figures, error) {
	f := figures{c: c}
	pop := newPopulation(c)
	b, _ := json.Marshal(pop.grant(0))
	f.grantSz = len(b)
	admin := redis.NewClient(&redis.Options{Addr: redisAddr, ReadTimeout: time.Minute})
	defer admin.Close()
	rs, err := grants.OpenRedis("redis://"+redisAddr+"/0", grants.RedisOptions{Timeout: time.Minute})
	if err != nil {
		return f, err
	}
	defer rs.Close()
	boltPath := filepath.Join(dir, "grants.db")
	bs, err := grants.OpenBolt(boltPath)
	if err != nil {
		return f, err
	}
	defer bs.Close()
	for _, st := range []struct {
		name    string
		s       grants.Store
		workers int // Redis takes pipelines on several connections; bbolt has one writer
		size    func() (int64, error)
	}{
		{"Redis", rs, 4, func() (int64, error) { return usedMemory(ctx, admin) }},
		{"embedded (bbolt)", bs, 1, func() (int64, error) { return diskSize(boltPath) }},
	} {
		sf, err := measureStore(ctx, st.name, st.s, st.workers, st.size, pop, log)
		if err != nil {
			return f, fmt.Errorf("%s: %w", st.name, err)
		}
		f.stores = append(f.stores, sf)
	}
	f.heap = heap()
	return f, nil
}

func measureStore(ctx context.Context, name string, s grants.Store, workers int, size func() (int64, error), pop *population,
	log io.Writer) (storeFigures, error) {
	sf := storeFigures{name: name}
	step := func(what string, fn func() error) error {
		start := time.Now()
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		n, err := size()
		if err != nil {
			return err
		}
		sf.size = append(sf.size, n)
		fmt.Fprintf(log, "%s: %s in %s, %s\n", name, what, time.Since(start).Round(time.Millisecond), mib(n))
		return nil
	}
	start := time.Now()
	if err := step(fmt.Sprintf("%d users' grants", pop.c.users), func() error {
		return inBatches(pop.c.users, workers, log, name, func(from, to int) error {
			gs := make([]grants.Grant, 0, to-from)
			for i := from; i < to; i++ {
				gs = append(gs, pop.grant(i))
			}
			return grants.Import(ctx, s, gs, nil)
		})
	}); err != nil {
		return sf, err
	}
	sf.fill = time.Since(start)
	if err := step(fmt.Sprintf("%d pending requests", pop.c.pending), func() error {
		return inBatches(pop.c.pending, workers, io.Discard, name, func(from, to int) error {
			rs := make([]grants.Request, 0, to-from)
			for i := from; i < to; i++ {
				rs = append(rs, pop.request(i))
			}
			return grants.Import(ctx, s, nil, rs)
		})
	}); err != nil {
		return sf, err
	}
	// Revoked sessions (logouts) are the store's only per-session state.
	if err := step(fmt.Sprintf("%d session revocations", pop.c.sessions), func() error {
		return inParallel(pop.c.sessions, workers*4, func(i int) error {
			return s.RevokeSession(ctx, pop.user(i), "revoked-"+strconv.Itoa(i), pop.now.Add(12*time.Hour))
		})
	}); err != nil {
		return sf, err
	}
	var err error
	if sf.lookup, err = timeLookups(pop.sample, func(u grants.User, sid string) (grants.State, error) {
		return s.Lookup(ctx, u, sid, pop.now)
	}); err != nil {
		return sf, err
	}
	if err := measureCache(ctx, s, pop, &sf); err != nil {
		return sf, err
	}
	start = time.Now()
	reqs, err := s.Requests(ctx, grants.RequestFilter{Status: grants.Pending})
	sf.pendingList, sf.pendingListed = time.Since(start), len(reqs)
	if err != nil {
		return sf, err
	}
	start = time.Now()
	gs, err := s.Grants(ctx, grants.GrantFilter{Now: pop.now})
	sf.allGrants, sf.grantsListed = time.Since(start), len(gs)
	fmt.Fprintf(log, "%s: measured\n", name)
	return sf, err
}

// measureCache measures, through a grants.Cache (a node's), the lookups
// of users not cached (a miss: the store) and at once again (a hit), and
// the heap a cache holds: its mirror of the revocations in force, and its
// entries for the node's concurrent sessions (one user each). The
// entries are what the heap loses when the cache is dropped, less the
// mirror: the store's own memo of decoded grants (bounded) stays.
func measureCache(ctx context.Context, s grants.Store, pop *population, sf *storeFigures) error {
	c := grants.NewCache(unclosed{s}, time.Minute)
	var hits []time.Duration
	miss, err := timeLookups(pop.sample, func(u grants.User, sid string) (grants.State, error) {
		st, err := c.Lookup(ctx, u, sid, time.Now())
		if err != nil {
			return st, err
		}
		start := time.Now()
		_, err = c.Lookup(ctx, u, sid, time.Now())
		hits = append(hits, time.Since(start))
		return st, err
	})
	c.Close()
	if err != nil {
		return err
	}
	sf.cacheMiss, sf.cacheHit = miss, percentiles(hits)

	before := heap()
	c = grants.NewCache(unclosed{s}, time.Minute)
	if !c.Ready() {
		return fmt.Errorf("the cache's mirror of revocations did not load")
	}
	sf.mirrorBytes = int64(heap()) - int64(before)
	for i := range pop.c.sessions {
		if _, err := c.Lookup(ctx, pop.user(i), "live-"+strconv.Itoa(i), time.Now()); err != nil {
			return err
		}
	}
	with := heap()
	c.Close()
	c = nil
	sf.entryBytes = int64(with) - int64(heap()) - sf.mirrorBytes
	return nil
}

// unclosed keeps a cache's Close from closing the store.
type unclosed struct{ grants.Store }

func (unclosed) Close() error { return nil }

// timeLookups times one lookup of each user, and checks that each finds
// the user's grant (and not as revoked).
func timeLookups(users []grants.User, lookup func(grants.User, string) (grants.State, error)) (latencies, error) {
	ds := make([]time.Duration, 0, len(users))
	for i, u := range users {
		start := time.Now()
		st, err := lookup(u, "live-"+strconv.Itoa(i))
		ds = append(ds, time.Since(start))
		if err != nil {
			return latencies{}, err
		}
		if len(st.Grants) != 1 || st.SessionRevoked {
			return latencies{}, fmt.Errorf("lookup of %s: %d grants, session revoked %v; want 1 grant", u, len(st.Grants), st.SessionRevoked)
		}
	}
	return percentiles(ds), nil
}

func percentiles(ds []time.Duration) latencies {
	if len(ds) == 0 {
		return latencies{}
	}
	slices.Sort(ds)
	return latencies{ds[len(ds)/2], ds[len(ds)*99/100]}
}

// inBatches runs write for [from, to) ranges of batch records out of n,
// on workers goroutines, logging progress at every tenth.
func inBatches(n, workers int, log io.Writer, name string, write func(from, to int) error) error {
	batches := (n + batch - 1) / batch
	var mu sync.Mutex
	done := 0
	start := time.Now()
	return inParallel(batches, workers, func(b int) error {
		from, to := b*batch, min((b+1)*batch, n)
		if err := write(from, to); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		done++
		if done*10/batches != (done-1)*10/batches {
			fmt.Fprintf(log, "%s: %d%% (%s)\n", name, done*100/batches, time.Since(start).Round(time.Second))
		}
		return nil
	})
}

// inParallel runs fn(0..n-1) on workers goroutines, stopping at the
// first error.
func inParallel(n, workers int, fn func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if err != nil {
		return err
	}
	return <-errs // nil once closed and empty
}

// population is who the stores hold: users 0..users-1 with a grant each,
// the first pending of them with a pending request, and a fixed random
// sample to look up.
type population struct {
	c      config
	now    time.Time
	sample []grants.User
}

func newPopulation(c config) *population {
	p := &population{c: c, now: time.Now()}
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, i := range rnd.Perm(c.users)[:min(c.lookups, c.users)] {
		p.sample = append(p.sample, p.user(i))
	}
	return p
}

func (p *population) user(i int) grants.User {
	return grants.User{Iss: "https://idp.example.com/realms/corp", Sub: fmt.Sprintf("%08d-4c1e-9a57-user", i)}
}

func (p *population) email(i int) string { return fmt.Sprintf("user%07d@example.com", i) }

// grant is user i's: four hours of one of 20 resources, approved an hour
// ago.
func (p *population) grant(i int) grants.Grant {
	return grants.Grant{User: p.user(i), Email: p.email(i), App: "payroll", Resource: fmt.Sprintf("payroll-%02d", i%20),
		Reason: "month-end close, ticket FIN-" + strconv.Itoa(10000+i%90000), RequestedBy: p.email(i), ApprovedBy: "approver@example.com",
		CreatedAt: p.now.Add(-time.Hour).Unix(), ExpiresAt: p.now.Add(3 * time.Hour).Unix()}
}

func (p *population) request(i int) grants.Request {
	return grants.Request{App: "payroll", Resource: fmt.Sprintf("payroll-%02d", (i+1)%20), Reason: "quarterly report",
		User: p.user(i), Email: p.email(i), Name: "User " + strconv.Itoa(i), Duration: 2 * 3600, MaxDuration: 4 * 3600,
		CreatedAt: p.now.Unix()}
}

// usedMemory is Redis's used_memory less its clients' buffers (which a
// pipeline just run leaves behind for a while): what the data costs.
func usedMemory(ctx context.Context, admin *redis.Client) (int64, error) {
	info, err := admin.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	field := func(name string) (int64, error) {
		for line := range strings.SplitSeq(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
				return strconv.ParseInt(v, 10, 64)
			}
		}
		return 0, fmt.Errorf("no %s in INFO memory", name)
	}
	used, err := field("used_memory")
	if err != nil {
		return 0, err
	}
	clients, err := field("mem_clients_normal")
	return used - clients, err
}

// diskSize is what the file takes on disk (its blocks: bbolt extends the
// file ahead of its pages). It moves in steps: bbolt never shrinks the
// file, and fills the pages its copy-on-write freed before it grows.
func diskSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fi.Size(), nil
	}
	return st.Blocks * 512, nil
}

// heap is the Go heap in use after a collection.
func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
