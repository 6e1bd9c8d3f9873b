package gate

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// BenchmarkUsageNote is what counting an allowed request costs the
// request: 1000 users on 100 paths, named by the path or by the policy's
// resource, some through a grant. It must allocate nothing.
func BenchmarkUsageNote(b *testing.B) {
	store := grants.NewMemory()
	b.Cleanup(func() { _ = store.Close() })
	g := &Gate{usage: newUsageRecorder("projects", func() grants.Store { return store }, UsageMaxEntries, zap.NewNop())}
	sessions := make([]*authn.Session, 1000)
	for i := range sessions {
		sessions[i] = &authn.Session{Issuer: "https://idp.example.com", Subject: fmt.Sprintf("user-%d", i), Email: fmt.Sprintf("user%d@example.com", i)}
	}
	paths := make([]string, 100)
	for i := range paths {
		paths[i] = fmt.Sprintf("/work%d/item", i)
	}
	held := []grants.Grant{{Resource: "projects-app"}}
	now := time.Now()
	note := func(i int) {
		s := sessions[i%len(sessions)]
		if i%10 == 9 {
			g.noteUsage(s, "projects-app", paths[i%len(paths)], held, now)
			return
		}
		g.noteUsage(s, "", paths[(i*7919)%len(paths)], nil, now)
	}
	for i := range 200000 { // every pair once: the map has grown
		note(i)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			note(i)
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				note(i)
				i++
			}
		})
	})
	if testing.AllocsPerRun(1000, func() { note(42) }) != 0 {
		b.Error("counting a request allocates")
	}
	g.usage.flush(context.Background())
}

// libraryGate is the payroll site with the shipped policy library and
// its example data.
func libraryGate(t *testing.T, change func(*Config)) *testGate {
	t.Helper()
	engine, err := policies.NewEngine("../policies", policies.Options{Query: policies.DefaultQuery, Timeout: time.Minute}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = engine.Close() })
	return newTestGate(t, func(c *Config) {
		c.Policy, c.PolicyHeaders = engine, []string{"X-Payroll-Role"}
		if change != nil {
			change(c)
		}
	})
}

// usageOf reads the app's usage of the last day.
func (tg *testGate) usageOf(t *testing.T) map[string]grants.Usage {
	t.Helper()
	now := tg.clock.now()
	us, err := tg.store.Usage(context.Background(), tg.cfg.App, now.Add(-24*time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]grants.Usage{}
	for _, u := range us {
		out[u.User.Sub+" "+u.Resource+" "+u.Via] = u
	}
	return out
}

// TestUsageRecorded: allowed requests are counted by user and resource
// (the policy's, else the path's first segment) and way of access, and
// reach the store only when written.
func TestUsageRecorded(t *testing.T) {
	tg := newTestGate(t, nil) // no policy: everyone signed in is allowed
	c := tg.cookie(t, tg.session())
	for _, p := range []string{"/Payslips/1", "/payslips/2", "/payslips", "/", "/a%7Cb/c", "/static/x.css"} {
		want(t, p, tg.handle(request(http.MethodGet, p, false, c)), Allow, 0, map[bool]Result{true: ResultPublic, false: ResultAllow}[p == "/static/x.css"], ReasonNone)
	}
	want(t, "signed out", tg.handle(request(http.MethodGet, "/payslips/3", false)), Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonNoCookie))
	if got := tg.usageOf(t); len(got) != 0 {
		t.Fatalf("usage in the store before a write: %v", got)
	}
	tg.usage.flush(context.Background())
	got := tg.usageOf(t)
	if u := got["alice /payslips standing"]; u.Count != 3 || u.Last != tg.clock.now().Unix() || u.Email != "alice@example.com" {
		t.Errorf("/payslips: %v", u)
	}
	if got["alice / standing"].Count != 1 || got["alice "+UsageOther+" standing"].Count != 1 || len(got) != 3 {
		t.Errorf("usage: %v (public paths and refused requests do not count)", got)
	}

	// With the policy library: its resource, and whether a grant gave it.
	lg := libraryGate(t, nil)
	staff := lg.session()
	want(t, "staff at /", lg.handle(request(http.MethodGet, "/", false, lg.cookie(t, staff))), Allow, 0, ResultAllow, ReasonNone)
	admin := lg.session()
	admin.ID, admin.Subject, admin.Groups = "s9", "paula", []string{"payroll-users"}
	admin.ACR, admin.AuthTime = "urn:gatehouse:loa:mfa", lg.clock.now().Unix()
	now := lg.clock.now()
	if _, err := lg.store.AddGrant(context.Background(), grants.Grant{User: grants.User{Iss: lg.idp.URL, Sub: "paula"}, Resource: "payroll-admin",
		CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	want(t, "a grant for admin", lg.handle(request(http.MethodGet, "/admin/users", false, lg.cookie(t, admin))), Allow, 0, ResultAllow, ReasonNone)
	lg.usage.flush(context.Background())
	got = lg.usageOf(t)
	if got["alice payroll-reports standing"].Count != 1 || got["paula payroll-admin grant"].Count != 1 || len(got) != 2 {
		t.Errorf("usage with the library: %v", got)
	}
}

// failingUsage is a store that cannot take usage while down.
type failingUsage struct {
	grants.Store
	down bool
}

func (f *failingUsage) AddUsage(ctx context.Context, us []grants.Usage) error {
	if f.down {
		return grants.ErrUnavailable
	}
	return f.Store.AddUsage(ctx, us)
}

// TestUsageBounded: the map holds at most its bound, asks for a write
// when full, keeps what a failed write did not store, and Close writes
// what is left.
func TestUsageBounded(t *testing.T) {
	mem := grants.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	store := &failingUsage{Store: mem, down: true}
	core, logs := observer.New(zapcore.InfoLevel)
	r := newUsageRecorder("payroll", func() grants.Store { return store }, 2, zap.New(core))
	now := time.Now()
	s := func(sub string) *authn.Session { return &authn.Session{Issuer: "https://idp", Subject: sub} }
	r.note(s("a"), "/x", false, now.Unix())
	r.note(s("b"), "/x", false, now.Unix())
	r.note(s("a"), "/x", false, now.Unix()+1) // an existing pair still counts
	select {
	case <-r.full:
		t.Fatal("a write asked for before the map was full")
	default:
	}
	r.note(s("c"), "/x", false, now.Unix()) // full: not counted, a write is asked for
	select {
	case <-r.full:
	default:
		t.Fatal("no write asked for when the map was full")
	}
	r.flush(context.Background()) // the store is down: kept
	if len(r.counts) != 2 || r.counts[usageKey{"https://idp", "a", "/x", false}].count != 2 {
		t.Fatalf("after a failed write: %v", r.counts)
	}
	if logs.FilterMessageSnippet("dropped").Len() != 1 || logs.FilterMessageSnippet("not written").Len() != 1 {
		t.Errorf("logs: %v", logs.All())
	}
	store.down = false
	r.note(s("a"), "/x", false, now.Unix()+2)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { r.run(stop); close(done) }()
	close(stop)
	<-done
	us, _ := mem.Usage(context.Background(), "payroll", now.Add(-time.Hour), now.Add(time.Hour))
	if len(us) != 2 || us[0].User.Sub != "a" || us[0].Count != 3 || us[0].Last != now.Unix()+2 || us[1].Count != 1 {
		t.Errorf("written at the stop: %v", us)
	}
	if logs.FilterMessage("usage records written again").Len() != 1 {
		t.Errorf("no log of the recovery: %v", logs.All())
	}
}
