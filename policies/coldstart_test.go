package policies

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// benchMix is the traffic of the bench harness (bench/targets.go): app
// projects, 1000 users, nine in ten staff in four group sets and one in
// ten a contractor with a grant for projects-app, 400 paths (200 under
// /work/ and 200 under /docs/), 20000 requests drawn at random.
func benchMix(now int64) []*Input { return appMix("projects", now) }

// appMix is benchMix for another app of the library.
func appMix(app string, now int64) []*Input {
	const users, paths, count = 1000, 200, 20000
	groupSets := [][]string{{"staff"}, {"staff", "engineering"}, {"staff", "vpn", "berlin"}, {"staff", "managers"}}
	r := rand.New(rand.NewPCG(42, 1))
	out := make([]*Input, count)
	for i := range out {
		u := r.IntN(users)
		p := fmt.Sprintf("%s%d", []string{"/work/", "/docs/"}[r.IntN(2)], r.IntN(paths))
		in := &Input{
			App: app, Now: now, NowMinute: MinuteOf(now), Version: InputVersion,
			User: User{Sub: fmt.Sprintf("user-%06d", u), Iss: "https://idp.invalid/realms/bench", Email: fmt.Sprintf("user%d@example.com", u),
				Name: "Bench User", Groups: groupSets[u%len(groupSets)], ACR: "urn:gatehouse:loa:pwd", AMR: []string{"pwd"}, AuthTime: now - 60},
			Session:   Session{AgeS: 60, IdleS: 5},
			Principal: Principal{Kind: "user", Via: "session"}, Token: Token{Scopes: []string{}}, RevokedResources: []string{},
			Request: Request{Method: "GET", Host: "127.0.0.1", Path: p, PathLower: strings.ToLower(p), RawPath: p, RemoteIP: "127.0.0.1"},
		}
		var gs []Grant
		if u%10 == 9 {
			in.User.Groups = []string{"contractors"}
			gs = []Grant{{Resource: "projects-app", ExpiresAt: now + 7200 + int64(u), ApprovedBy: "manager@example.com"}}
		}
		in.SetGrants(gs)
		out[i] = in
	}
	return out
}

// BenchmarkColdPass decides the bench's 20000 requests with an empty
// cache, as after a start or an idle minute turn: one pass per op.
func BenchmarkColdPass(b *testing.B) {
	rev, err := Load(context.Background(), ".", Options{Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	mix := benchMix(wed1000)
	ctx := context.Background()
	misses := 0
	for b.Loop() {
		rev.cache = newDecisionCache(DefaultCacheSize)
		for _, in := range mix {
			_, cached, err := rev.DecideInput(ctx, in)
			if err != nil {
				b.Fatal(err)
			}
			if !cached {
				misses++
			}
		}
	}
	b.ReportMetric(float64(misses)/float64(b.N), "evals/op")
}

// BenchmarkIdleMinuteTurn decides the bench's 20000 requests after the
// cache was filled by the same requests two minutes earlier: the gateway
// sat idle while the minute turned. In payroll, contractors are limited
// to working hours (Wednesday 10:00 in Berlin here), so their decisions
// read the time.
func BenchmarkIdleMinuteTurn(b *testing.B) {
	rev, err := Load(context.Background(), ".", Options{Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, app := range []string{"projects", "payroll"} {
		before, after := appMix(app, wed1000), appMix(app, wed1000+120)
		b.Run(app, func(b *testing.B) {
			misses := 0
			for b.Loop() {
				b.StopTimer()
				rev.cache = newDecisionCache(DefaultCacheSize)
				for _, in := range before {
					if _, _, err := rev.DecideInput(ctx, in); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				for _, in := range after {
					_, cached, err := rev.DecideInput(ctx, in)
					if err != nil {
						b.Fatal(err)
					}
					if !cached {
						misses++
					}
				}
			}
			b.ReportMetric(float64(misses)/float64(b.N), "evals/op")
		})
	}
}
