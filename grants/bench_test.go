package grants

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

// benchStore fills a store (Redis, or the embedded file store) with one
// user's 20 grants.
func benchStore(b *testing.B, kind string) (Store, User) {
	var s Store
	if kind == "redis" {
		r := redistest.Start(b, redistest.Options{})
		rs, err := OpenRedis(r.URL(), RedisOptions{Timeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		s = rs
	} else {
		bs, err := OpenBolt(filepath.Join(b.TempDir(), "grants.db"))
		if err != nil {
			b.Fatal(err)
		}
		s = bs
	}
	b.Cleanup(func() { _ = s.Close() })
	now := time.Now()
	u := User{Iss: "https://idp.example.com/realms/corp", Sub: "3f1c9a7e-0d2b-4c55-9a1e-6b0f2d7c8e91"}
	for i := range 20 {
		if _, err := s.AddGrant(context.Background(), Grant{User: u, Email: "alice@example.com", Resource: fmt.Sprintf("res-%d", i),
			Reason: "benchmark", ApprovedBy: "carol@example.com", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()}); err != nil {
			b.Fatal(err)
		}
	}
	return s, u
}

// BenchmarkLookupCold is one lookup through to the store (for Redis, one
// round trip): what a node pays at most once a second per session.
func BenchmarkLookupCold(b *testing.B) {
	for _, kind := range []string{"redis", "file"} {
		b.Run(kind, func(b *testing.B) {
			s, u := benchStore(b, kind)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				st, err := s.Lookup(ctx, u, "sid", time.Now())
				if err != nil || len(st.Grants) != 20 {
					b.Fatal(err, len(st.Grants))
				}
			}
		})
	}
}

// BenchmarkLookupWarm is the per-request lookup with a fresh cache entry.
func BenchmarkLookupWarm(b *testing.B) {
	s, u := benchStore(b, "redis")
	c := NewCache(s, time.Second)
	b.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	now := time.Now()
	if _, err := c.Lookup(ctx, u, "sid", now); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		st, err := c.Lookup(ctx, u, "sid", now)
		if err != nil || len(st.Grants) != 20 {
			b.Fatal(err, len(st.Grants))
		}
	}
}
