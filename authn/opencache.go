package authn

import (
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

// OpenCache remembers what a Sealer opened, by the whole sealed value, so
// that a cookie sent on every request is opened (HMAC, AES, JSON) once a
// TTL rather than each time. A value is trusted from the cache for at
// most TTL after it was opened; then it is opened again, which checks its
// seal and age anew. Failures are not cached. The opened value is shared
// between requests: callers get a copy of T, and must treat the maps and
// slices it holds as read-only.
type OpenCache[T any] struct {
	open   func(value string, v *T) error
	ttl    time.Duration
	per    int
	seed   maphash.Seed
	shards [openCacheShards]openShard[T]
}

const openCacheShards = 16

type openShard[T any] struct {
	mu       sync.RWMutex
	cur, old map[string]openEntry[T]
}

type openEntry[T any] struct {
	v     T
	until int64 // unix nanoseconds
}

// NewOpenCache caches what s opens for the cookie called name, keeping
// about size values (at most twice that).
func NewOpenCache[T any](s *Sealer, name string, ttl time.Duration, size int) *OpenCache[T] {
	return NewOpenCacheFunc(func(value string, v *T) error { return s.Open(name, value, v) }, ttl, size)
}

// NewOpenCacheFunc caches what open opens: a value that one of several
// sealers may have sealed, say. open must check the value's seal and
// age, as Sealer.Open does, and fail for anything it would not accept.
func NewOpenCacheFunc[T any](open func(value string, v *T) error, ttl time.Duration, size int) *OpenCache[T] {
	c := &OpenCache[T]{open: open, ttl: ttl, per: max(size/openCacheShards, 1), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].cur = map[string]openEntry[T]{}
	}
	return c
}

// Open is Sealer.Open through the cache.
func (c *OpenCache[T]) Open(value string, now time.Time) (T, error) {
	sh := &c.shards[maphash.String(c.seed, value)%openCacheShards]
	n := now.UnixNano()
	sh.mu.RLock()
	e, ok := sh.cur[value]
	if !ok {
		e, ok = sh.old[value]
	}
	sh.mu.RUnlock()
	if ok && n < e.until {
		return e.v, nil
	}
	var v T
	if err := c.open(value, &v); err != nil {
		return v, err
	}
	sh.mu.Lock()
	if len(sh.cur) >= c.per {
		sh.old, sh.cur = sh.cur, make(map[string]openEntry[T], c.per)
	}
	// value is a piece of the request's Cookie header: a copy keeps the
	// header itself from living on in the cache.
	sh.cur[strings.Clone(value)] = openEntry[T]{v: v, until: n + int64(c.ttl)}
	sh.mu.Unlock()
	return v, nil
}
