package policies

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The decision cache.
//
// A decision is a function of the input and the revision (its policy
// files and data), since policies cannot use non-deterministic built-ins
// and cache. So a revision may reuse a decision for any input that agrees
// with an earlier one on every field the decision query can read. Load
// finds those fields by walking the compiled policy from the decision
// query's rules along the compiler's dependency graph (rules, functions,
// else branches, comprehensions, with modifiers; a dynamic reference to
// data counts every rule it could reach) and collecting each reference
// to input. A reference that names fields (input.user.groups) reads that
// subtree; anything else (input[x], input used as a value) reads the
// whole input, and then nothing is cached. A reachable non-deterministic
// built-in (time.now_ns, http.send…) also turns the cache off.
//
// The cache key is the read fields of the input, encoded unambiguously
// (projection.go). A miss evaluates the policy with exactly that
// projection of the input, so the decision can depend on nothing else;
// and a decision whose evaluation never read the time (now, now_minute)
// is keyed without it, so it outlives the minute (clock.go). The cache
// belongs to the revision: a policy or data change is a new revision with
// an empty cache. It holds at most about 2 × CacheSize decisions (two
// generations per shard; the older is dropped when the newer fills).

// DefaultCacheSize is the default number of decisions a revision keeps.
const DefaultCacheSize = 10000

const cacheShards = 16

type decisionCache struct {
	seed     maphash.Seed
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu       sync.RWMutex
	cur, old map[string]Decision
	hits     atomic.Uint64
	misses   atomic.Uint64
	_        [32]byte // keep shards' counters off each other's cache lines
}

func newDecisionCache(size int) *decisionCache {
	c := &decisionCache{seed: maphash.MakeSeed(), perShard: max(size/cacheShards, 1)}
	for i := range c.shards {
		c.shards[i].cur = make(map[string]Decision)
	}
	return c
}

func (c *decisionCache) shard(key []byte) *cacheShard {
	return &c.shards[maphash.Bytes(c.seed, key)%cacheShards]
}

func (c *decisionCache) get(key []byte) (Decision, bool) {
	d, ok, s := c.lookup(key)
	if ok {
		s.hits.Add(1)
	} else {
		s.misses.Add(1)
	}
	return d, ok
}

// lookup is get without counting: the caller counts on s.
func (c *decisionCache) lookup(key []byte) (d Decision, ok bool, s *cacheShard) {
	s = c.shard(key)
	s.mu.RLock()
	d, ok = s.cur[string(key)]
	if !ok {
		d, ok = s.old[string(key)]
	}
	s.mu.RUnlock()
	return d, ok, s
}

// has reports whether key is cached, without counting a lookup.
func (c *decisionCache) has(key []byte) bool {
	s := c.shard(key)
	s.mu.RLock()
	_, ok := s.cur[string(key)]
	if !ok {
		_, ok = s.old[string(key)]
	}
	s.mu.RUnlock()
	return ok
}

func (c *decisionCache) put(key []byte, d Decision) {
	s := c.shard(key)
	s.mu.Lock()
	if len(s.cur) >= c.perShard {
		s.old, s.cur = s.cur, make(map[string]Decision, c.perShard)
	}
	s.cur[string(key)] = d
	s.mu.Unlock()
}

// CacheStats counts decision cache lookups of a revision.
type CacheStats struct {
	Enabled      bool
	Reads        []string // the input fields the decision can depend on
	Why          string   // why the cache is off
	Hits, Misses uint64
	Prefetched   uint64 // next-minute decisions made ahead
	Entries      int
}

// CacheStats reports the revision's decision cache.
func (r *Revision) CacheStats() CacheStats {
	st := CacheStats{Enabled: r.cache != nil, Why: r.noCache, Prefetched: r.prefetched.Load()}
	if r.reads != nil {
		st.Reads = r.reads.names()
	}
	if r.cache == nil {
		return st
	}
	for i := range r.cache.shards {
		s := &r.cache.shards[i]
		st.Hits += s.hits.Load()
		st.Misses += s.misses.Load()
		s.mu.RLock()
		st.Entries += len(s.cur) + len(s.old)
		s.mu.RUnlock()
	}
	return st
}

// Reads reports whether the decision query can read input.top (or
// input.top.sub): callers may leave out what it cannot.
func (r *Revision) Reads(top, sub string) bool {
	return r.reads == nil || r.reads.reads(top, sub)
}

var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxKey bounds a cached decision's key. The key holds the raw values the
// policy reads (a path, say), so without a bound a client could pin memory
// with a few thousand huge requests; longer keys are evaluated, never
// cached, and their buffers are not pooled.
const maxKey = 4096

// DecideInput evaluates the decision query for in, from the cache when
// an equal projection of the input was decided before. cached says so.
// The returned decision is shared: callers must not modify it. An
// evaluation is bounded by the revision's timeout, not cancelled with
// ctx: a decision is made (and logged) even if the client has gone.
func (r *Revision) DecideInput(ctx context.Context, in *Input) (d Decision, cached bool, err error) {
	if r.cache == nil {
		ctx = context.WithoutCancel(ctx)
		if r.reads == nil {
			d, err = r.Decide(ctx, in.Value())
		} else {
			d, err = r.Decide(ctx, r.reads.value(in))
		}
		return d, false, err
	}
	bp := keyBufs.Get().(*[]byte)
	key := r.cacheKey((*bp)[:0], in, false)
	if len(key) > maxKey {
		keyBufs.Put(bp)
		d, err = r.Decide(context.WithoutCancel(ctx), r.reads.value(in))
		return d, false, err
	}
	defer func() { *bp = key; keyBufs.Put(bp) }()
	if r.clocked != nil {
		// A decision that holds at any time, else one for this time.
		if d, ok, s := r.cache.lookup(key); ok {
			s.hits.Add(1)
			return d, true, nil
		}
		key = r.reads.clockKey(append(key[:len(key)-1], timedKey), in)
	}
	if d, ok := r.cache.get(key); ok {
		if r.prefetch && in.Now-in.NowMinute >= 60-prefetchWindow {
			r.prefetchNextMinute(in)
		}
		return d, true, nil
	}
	d, timed, err := r.decide(context.WithoutCancel(ctx), r.reads.value(in), in.Now, in.NowMinute)
	if err == nil {
		if !timed {
			key = r.cacheKey(key[:0], in, false)
		}
		r.cache.put(key, d)
	}
	return d, false, err
}

// The byte after the rest of a key says whether the time follows: a
// decision that did not read the time is cached without it (clock.go).
const (
	timelessKey = 0
	timedKey    = 1
)

// cacheKey appends in's cache key to b: that of a decision that read the
// time (timed) or of one that did not. Without the clock copy of the
// policy, every decision is taken to read the time and keyed by it.
func (r *Revision) cacheKey(b []byte, in *Input, timed bool) []byte {
	if r.clocked == nil {
		return r.reads.key(b, in)
	}
	b = r.reads.baseKey(b, in)
	if !timed {
		return append(b, timelessKey)
	}
	return r.reads.clockKey(append(b, timedKey), in)
}

// decide evaluates the decision for val, a projected input whose time is
// now and minute, and says whether it read the time. Without the clock
// copy, it may have.
func (r *Revision) decide(ctx context.Context, val ast.Value, now, minute int64) (d Decision, timed bool, err error) {
	if r.clocked == nil {
		d, err = r.Decide(ctx, val)
		return d, true, err
	}
	c := &clock{now: now, nowMinute: minute}
	v, err := r.eval(context.WithValue(ctx, clockCtxKey{}, c), r.clocked, val, nil)
	if err != nil {
		return Decision{}, false, err
	}
	d, err = parseDecision(v)
	return d, c.read, err
}

// prefetchWindow is how long before the minute ends a cached decision is
// decided again for the next minute. A policy that reads now_minute (and
// not now) would otherwise miss on every key that read the time when the
// minute turns; deciding the next minute's input ahead, one key at a time
// in the background, spreads that work over the window. The decision
// stored is that of exactly the next minute's input, so it is as correct
// as any.
const prefetchWindow = 10

func (r *Revision) prefetchNextMinute(in *Input) {
	if !r.prefetching.CompareAndSwap(false, true) {
		return // one at a time: the hot keys come back soon enough
	}
	next := *in
	next.NowMinute += 60
	next.Now = next.NowMinute // not read: prefetch is only for policies that read now_minute alone
	key := r.cacheKey(nil, &next, true)
	if len(key) > maxKey || r.cache.has(key) {
		r.prefetching.Store(false)
		return
	}
	// Now, while in is the caller's.
	val, timeless := r.reads.value(&next), r.cacheKey(nil, &next, false)
	go func() {
		defer r.prefetching.Store(false)
		d, timed, err := r.decide(context.Background(), val, next.Now, next.NowMinute)
		if err != nil {
			return
		}
		if !timed {
			key = timeless
		}
		r.cache.put(key, d)
		r.prefetched.Add(1)
	}()
}

// analyse finds what the query can read of the input. It returns the
// projection, or nil and why when the decision may depend on more than
// named fields of the input.
func analyse(c *ast.Compiler, query ast.Ref) (*projection, string) {
	var (
		why     string
		tops    = map[string]bool{} // input.user…
		wholes  = map[string]bool{} // input.user, input.user[x]
		subs    = map[string]bool{} // input.user.groups…
		seen    = map[*ast.Rule]bool{}
		pending []*ast.Rule
	)
	refuse := func(format string, args ...any) {
		if why == "" {
			why = fmt.Sprintf(format, args...)
		}
	}
	push := func(rs ...*ast.Rule) {
		for _, r := range rs {
			for ; r != nil; r = r.Else {
				if !seen[r] {
					seen[r] = true
					pending = append(pending, r)
				}
			}
		}
	}
	var visit func(x any)
	visit = func(x any) {
		ast.WalkTerms(x, func(t *ast.Term) bool {
			switch v := t.Value.(type) {
			case ast.Var:
				if v.Equal(ast.InputRootDocument.Value) {
					refuse("the policy uses input as a whole")
				}
			case ast.Ref:
				if b, ok := ast.BuiltinMap[v.String()]; ok && (b.Nondeterministic || isNondeterministicName(b.Name)) {
					refuse("the policy uses %s, which is not deterministic", b.Name)
				}
				if !v[0].Equal(ast.InputRootDocument) {
					return false
				}
				top, ok1 := refString(v, 1)
				sub, ok2 := refString(v, 2)
				switch {
				case len(v) == 1:
					refuse("the policy uses input as a whole")
				case !ok1:
					refuse("the policy reads input with a variable key (%s)", v)
				case !ok2:
					tops[top], wholes[top] = true, true
				default:
					tops[top], subs[top+"."+sub] = true, true
				}
				// Dynamic parts of the reference are read too.
				for _, e := range v[1:] {
					if _, ok := e.Value.(ast.String); !ok {
						visit(e)
					}
				}
				return true
			}
			return false
		})
	}
	push(c.GetRulesDynamicWithOpts(query, ast.RulesOptions{IncludeHiddenModules: true})...)
	for len(pending) > 0 {
		r := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		visit(r.Head)
		if r.Head.Reference != nil {
			visit(r.Head.Reference)
		}
		visit(r.Body)
		for dep := range c.Graph.Dependencies(r) {
			if dr, ok := dep.(*ast.Rule); ok {
				push(dr)
			}
		}
	}
	if why != "" {
		return nil, why
	}
	return projectionOf(func(f *field) bool {
		if f.sub == "" {
			return tops[f.top]
		}
		return wholes[f.top] || subs[f.top+"."+f.sub]
	}), ""
}

// refString is the i-th element of ref when it is a string.
func refString(ref ast.Ref, i int) (string, bool) {
	if i >= len(ref) {
		return "", false
	}
	s, ok := ref[i].Value.(ast.String)
	return string(s), ok
}

func isNondeterministicName(name string) bool {
	_, ok := nonDeterministic[name]
	return ok
}
