package authn

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestOpenCache(t *testing.T) {
	s := mustSealer(t, [][]byte{secretA}, "session", bind)
	c := NewOpenCache[Session](s, "c", time.Minute, 64)
	now := time.Now()
	v, _ := s.Seal("c", Session{ID: "x", Subject: "alice", Groups: []string{"staff"}})
	got, err := c.Open(v, now)
	if err != nil || got.Subject != "alice" {
		t.Fatalf("first open: %+v %v", got, err)
	}
	// A caller's change to its copy does not reach the cache.
	got.LastSeen = 99
	if again, _ := c.Open(v, now); again.LastSeen != 0 {
		t.Error("a caller's copy changed the cached session")
	}
	// Hostile values never open, and are not remembered as anything.
	for _, bad := range []string{"", v[:len(v)-2], v + "A", "x|y|z", v[:10] + "Z" + v[11:]} {
		if _, err := c.Open(bad, now); !errors.Is(err, ErrInvalidCookie) {
			t.Errorf("%q opened: %v", bad, err)
		}
	}
	// Another key's cookie, even one the cache saw under the same value
	// with another sealer, does not open.
	other := NewOpenCache[Session](mustSealer(t, [][]byte{secretB}, "session", bind), "c", time.Minute, 64)
	if _, err := other.Open(v, now); !errors.Is(err, ErrInvalidCookie) {
		t.Errorf("a cache over another key opened the value: %v", err)
	}
	// Past its TTL a value is opened again: a sealer whose max age is
	// over refuses it then.
	short, _ := NewSealer([][]byte{secretA}, "session", bind, time.Second)
	sc := NewOpenCache[Session](short, "c", 500*time.Millisecond, 64)
	sv, _ := short.Seal("c", Session{ID: "y"})
	if _, err := sc.Open(sv, time.Now()); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2100 * time.Millisecond)
	short.SetClock(func() time.Time { return later })
	if _, err := sc.Open(sv, later); !errors.Is(err, ErrInvalidCookie) {
		t.Errorf("a value past its max age opened from the cache: %v", err)
	}
	// The cache is bounded.
	for i := range 2000 {
		w, _ := s.Seal("c", Session{ID: fmt.Sprint(i)})
		if got, err := c.Open(w, now); err != nil || got.ID != fmt.Sprint(i) {
			t.Fatalf("%d: %+v %v", i, got, err)
		}
	}
	n := 0
	for i := range c.shards {
		n += len(c.shards[i].cur) + len(c.shards[i].old)
	}
	if n > 2*64+2*openCacheShards {
		t.Errorf("%d values in a cache of 64", n)
	}
}

func BenchmarkOpenSession(b *testing.B) {
	s := mustSealer(b, [][]byte{secretA}, "session", bind)
	v, _ := s.Seal("c", Session{ID: "0123456789abcdef", Subject: "3f1c9a7e-0d2b-4c55-9a1e-6b0f2d7c8e91", Email: "alice@example.com", Name: "Alice Example",
		Groups: []string{"staff", "payroll-users", "vpn"}, ACR: "urn:gatehouse:loa:mfa", AMR: []string{"pwd", "otp"}, AuthTime: 1795597000,
		Created: 1795597000, LastSeen: 1795597100})
	b.Run("sealer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out Session
			if err := s.Open("c", v, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := NewOpenCache[Session](s, "c", time.Minute, 1024)
		now := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Open(v, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}
