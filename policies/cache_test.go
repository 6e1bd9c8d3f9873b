package policies

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCacheAnalysis(t *testing.T) {
	const pkg = "package gatehouse\n\n"
	cases := []struct {
		name  string
		files map[string]string
		reads string // the projection's fields, or "off: <why>"
	}{
		{"one field", map[string]string{"p.rego": pkg + `decision := {"allow": input.user.sub == "a"}`}, "user.sub"},
		{"unreachable rules are not read", map[string]string{"p.rego": pkg + `
decision := {"allow": input.user.sub == "a"}
other if input.session.age_s > 3
approval := {"may_approve": input.user.email == "x"}`}, "user.sub"},
		{"functions", map[string]string{"p.rego": pkg + `
f(x) if x == input.request.method
decision := {"allow": f("GET")}`}, "request.method"},
		{"else branches", map[string]string{"p.rego": pkg + `
decision := {"allow": false} if input.app == "x"
else := {"allow": input.now > 5}`}, "app,now"},
		{"comprehensions and every", map[string]string{"p.rego": pkg + `
gs := [g | some g in input.user.groups]
ok if every g in input.grants { g.resource != "x" }
decision := {"allow": count(gs) > 0} if ok
default decision := false`}, "grants,user.groups"},
		{"with modifiers", map[string]string{"p.rego": pkg + `
inner if input.user.email == "y"
decision := {"allow": x} if { x := inner with input.user.sub as "y" }`}, "user.email,user.sub"},
		{"other packages", map[string]string{"lib.rego": "package lib\n\nf(x) if input.session.idle_s < x\n", "p.rego": pkg + `
import data.lib
decision := {"allow": lib.f(10)}`}, "session"},
		{"dynamic data references reach every rule they can", map[string]string{"lib.rego": "package lib\n\nemail := input.user.email\n\nmethod := input.request.method\n", "p.rego": pkg + `
import data.lib
decision := {"allow": data.lib[input.request.path] == "x"}`}, "request.method,request.path,user.email"},
		{"imported input", map[string]string{"p.rego": pkg + `
import input.user as u
decision := {"allow": u.acr == "mfa"}`}, "user.acr"},
		{"deeper references read their field", map[string]string{"p.rego": pkg + `decision := {"allow": input.request.query.page[0] == "1"}`}, "request.query"},
		{"a variable key reads the whole object", map[string]string{"p.rego": pkg + `decision := {"allow": input.user[k] == "x"} if some k in ["sub", "email"]
default decision := false`}, "user.acr,user.amr,user.auth_time,user.email,user.groups,user.idp,user.iss,user.name,user.sub,user.verifications"},
		{"a variable key in a field reads it", map[string]string{"p.rego": pkg + `decision := {"allow": input.request.headers[input.app] == "x"}`}, "app,request.headers"},
		{"input[x] reads everything", map[string]string{"p.rego": pkg + `decision := {"allow": count(input[k]) > 0} if some k in ["user"]
default decision := false`}, "off: the policy reads input with a variable key (input[__local2__])"},
		{"input as a value", map[string]string{"p.rego": pkg + `decision := {"allow": x.app == "a"} if x := input
default decision := false`}, "off: the policy uses input as a whole"},
		{"walk over input", map[string]string{"p.rego": pkg + `decision := {"allow": count([p | walk(input, [p, _])]) > 3}`}, "off: the policy uses input as a whole"},
		{"time.now_ns", map[string]string{"p.rego": pkg + `decision := {"allow": time.now_ns() > input.now}`}, "off: the policy uses time.now_ns, which is not deterministic"},
		{"rand", map[string]string{"p.rego": pkg + `decision := {"allow": rand.intn("x", 2) == 1}`}, "off: the policy uses rand.intn, which is not deterministic"},
		{"certificates verified against the clock", map[string]string{"p.rego": pkg + `decision := {"allow": v[0]} if v := crypto.x509.parse_and_verify_certificates(input.request.headers["x-cert"][0])
default decision := false`}, "off: the policy uses crypto.x509.parse_and_verify_certificates, which is not deterministic"},
		{"a non-deterministic built-in elsewhere does not matter", map[string]string{"p.rego": pkg + `
decision := {"allow": input.app == "a"}
debug := time.now_ns()`}, "app"},
	}
	for _, c := range cases {
		rev, err := Load(context.Background(), writePolicy(t, c.files), Options{})
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		st := rev.CacheStats()
		got := strings.Join(st.Reads, ",")
		if !st.Enabled {
			got = "off: " + st.Why
		}
		if got != c.reads {
			t.Errorf("%s: reads %q, want %q", c.name, got, c.reads)
		}
	}
}

func TestCacheAnalysisOfTheLibrary(t *testing.T) {
	rev, err := Load(context.Background(), ".", Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := rev.CacheStats()
	if want := "app,grant_resources,now_minute,request.method,request.path_lower,revoked_resources,user.groups"; !st.Enabled || strings.Join(st.Reads, ",") != want {
		t.Fatalf("the library's decision reads %v (cache on: %v, %s), want %s", st.Reads, st.Enabled, st.Why, want)
	}
	if off, _ := Load(context.Background(), ".", Options{CacheSize: -1}); off.CacheStats().Enabled {
		t.Error("CacheSize -1 left the cache on")
	}
}

// randomInput draws inputs that often agree on some fields and differ on
// others, so that cache keys collide where they may.
func randomInput(r *rand.Rand) *Input {
	pick := func(ss ...string) string { return ss[r.IntN(len(ss))] }
	groups := [][]string{nil, {"staff"}, {"contractors"}, {"staff", "managers"}, {"payroll-users"}, {"partners", "staff"}}
	paths := []string{"/", "/admin", "/admin/users", "/reports", "/reports/2026", "/payslips/1", "/work/1", "/work/secret/x", "/Admin", "/x"}
	p := paths[r.IntN(len(paths))]
	// Wednesday 10:00, 10:00:30, 10:00:55 (prefetching 10:01) and 10:01:05,
	// Saturday 10:00, Wednesday 21:00 (Berlin).
	now := []int64{1795597200, 1795597230, 1795597255, 1795597265, 1795856400, 1795597200 + 11*3600}[r.IntN(6)]
	in := &Input{
		App:     pick("payroll", "projects", "legacy", "nope"),
		User:    User{Sub: pick("a", "b"), Iss: "https://idp", Email: pick("a@example.com", ""), Groups: groups[r.IntN(len(groups))], ACR: pick("", "urn:gatehouse:loa:mfa"), AMR: []string{"pwd"}, AuthTime: now - int64(r.IntN(600))},
		Session: Session{AgeS: int64(r.IntN(100)), IdleS: int64(r.IntN(10))},
		Request: Request{Method: pick("GET", "POST", "HEAD"), Host: "h", Path: p, PathLower: strings.ToLower(p), RawPath: p,
			Query: map[string][]string{}, RemoteIP: "203.0.113.9", Headers: map[string]string{"user-agent": pick("a", "b")}},
		GrantsError: r.IntN(8) == 0,
		Now:         now,
		NowMinute:   MinuteOf(now),
	}
	var gs []Grant
	for range r.IntN(3) {
		gs = append(gs, Grant{Resource: pick("payroll-admin", "payroll-reports", "projects-app", "legacy-admin"), ExpiresAt: now + int64(r.IntN(3600)), ApprovedBy: pick("m", "n")})
	}
	in.SetGrants(gs)
	return in
}

// TestCacheAgreesWithEvaluation decides thousands of random inputs with
// the library through the cache and without it: every decision must be
// the same, and most must come from the cache.
func TestCacheAgreesWithEvaluation(t *testing.T) {
	// A generous timeout: on a loaded machine an evaluation can exceed the
	// default 100ms, and a timeout on one side only is no disagreement.
	rev, err := Load(context.Background(), ".", Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	hits := 0
	const n = 4000
	for i := range n {
		in := randomInput(r)
		got, cached, err := rev.DecideInput(ctx, in)
		want, werr := rev.Decide(ctx, in.Value())
		if (err == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Fatalf("input %d (cached %v): %+v, %v\nwithout the cache: %+v, %v", i, cached, got, err, want, werr)
		}
		if cached {
			hits++
		}
	}
	st := rev.CacheStats()
	t.Logf("%d of %d decisions from the cache (%d made ahead for the next minute), %d entries", hits, n, st.Prefetched, st.Entries)
	if hits < n/8 || st.Hits != uint64(hits) {
		t.Errorf("hits %d (stats %d) of %d", hits, st.Hits, n)
	}
}

func TestCacheIsBounded(t *testing.T) {
	rev, err := Load(context.Background(), writePolicy(t, map[string]string{"p.rego": "package gatehouse\n\ndecision := {\"allow\": input.request.path != \"/x\"}\n"}), Options{CacheSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5000 {
		in := &Input{Request: Request{Path: fmt.Sprintf("/%d", i)}}
		if d, _, err := rev.DecideInput(context.Background(), in); err != nil || !d.Allow {
			t.Fatal(d, err)
		}
	}
	if st := rev.CacheStats(); st.Entries > 2*64+cacheShards*2 {
		t.Errorf("%d entries for a cache of 64", st.Entries)
	}
}

// TestCacheRefusesHugeKeys: a request whose projected input is huge (a
// 1 MiB path) is decided, correctly, but never cached.
func TestCacheRefusesHugeKeys(t *testing.T) {
	rev, err := Load(context.Background(), writePolicy(t, map[string]string{"p.rego": "package gatehouse\n\ndecision := {\"allow\": input.request.path != \"/x\"}\n"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := &Input{Request: Request{Path: "/" + strings.Repeat("a", 1<<20)}}
	for range 2 {
		if d, cached, err := rev.DecideInput(context.Background(), in); err != nil || !d.Allow || cached {
			t.Fatalf("%+v cached %v, %v", d, cached, err)
		}
	}
	if st := rev.CacheStats(); st.Entries != 0 {
		t.Errorf("%d entries after huge inputs", st.Entries)
	}
}

// FuzzProjectionKey: two inputs with the same cache key must have the
// same value, field by field, as the policy sees it.
func FuzzProjectionKey(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Add(uint64(7), uint64(7))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		ra, rb := rand.New(rand.NewPCG(a, 0)), rand.New(rand.NewPCG(b, 0))
		x, y := randomInput(ra), randomInput(rb)
		// Often make them near-equal: copy x into y and change one thing.
		if b%3 == 0 {
			cp := *x
			y = &cp
			mutate(rb, y)
		}
		for i := range fields {
			p := projectionOf(func(g *field) bool { return g == &fields[i] })
			kx, ky := string(p.key(nil, x)), string(p.key(nil, y))
			vx, vy := p.value(x), p.value(y)
			if kx == ky && vx.Compare(vy) != 0 {
				t.Fatalf("field %s.%s: equal keys for different values\n%v\n%v", fields[i].top, fields[i].sub, vx, vy)
			}
		}
		if kx, ky := string(allFields.key(nil, x)), string(allFields.key(nil, y)); kx == ky && x.Value().Compare(y.Value()) != 0 {
			t.Fatalf("equal keys for different inputs\n%v\n%v", x.Value(), y.Value())
		}
	})
}

func mutate(r *rand.Rand, in *Input) {
	s := fmt.Sprint(r.IntN(3))
	switch r.IntN(8) {
	case 0:
		in.User.Groups = append(append([]string(nil), in.User.Groups...), s)
	case 1:
		in.User.Groups = []string{strings.Join(in.User.Groups, "") + s}
	case 2:
		in.Request.Query = map[string][]string{"a" + s: {"b"}}
	case 3:
		in.Request.Headers = map[string]string{"user-agent" + s: ""}
	case 4:
		in.User.Verifications = map[string]map[string]any{"eid": {"acr": s, "auth_time": int64(len(s))}}
	case 5:
		in.Grants = append(append([]Grant(nil), in.Grants...), Grant{Resource: s})
	case 6:
		in.AccessReq = &AccessRequest{Resource: s, Duration: "1h"}
	case 7:
		in.Request.Path += s
	}
}

// TestCachePrefetchesTheNextMinute: in the last seconds of a minute, a
// cached decision of a policy that reads now_minute is made ahead for the
// next minute, so the turn of the minute is not a miss on every key.
func TestCachePrefetchesTheNextMinute(t *testing.T) {
	ctx := context.Background()
	minute := int64(1795597200)
	policy := "package gatehouse\n\ndecision := {\"allow\": input.now_minute %% 120 == 0, \"reason\": input.user.sub}\n"
	rev, err := Load(ctx, writePolicy(t, map[string]string{"p.rego": strings.ReplaceAll(policy, "%%", "%")}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := func(now int64) *Input { return &Input{User: User{Sub: "a"}, Now: now, NowMinute: MinuteOf(now)} }
	if _, _, err := rev.DecideInput(ctx, at(minute+20)); err != nil { // miss, cached
		t.Fatal(err)
	}
	if _, cached, _ := rev.DecideInput(ctx, at(minute+55)); !cached { // hit, in the window: prefetch
		t.Fatal("not cached within the minute")
	}
	deadline := time.Now().Add(2 * time.Second)
	for rev.CacheStats().Prefetched == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	d, cached, err := rev.DecideInput(ctx, at(minute+61))
	if err != nil || !cached || d.Allow != (MinuteOf(minute+61)%120 == 0) || d.Reason != "a" {
		t.Fatalf("the next minute: %+v cached %v %v (prefetched %d)", d, cached, err, rev.CacheStats().Prefetched)
	}
	// A policy that reads now is not prefetched: its keys change every second.
	rev2, err := Load(ctx, writePolicy(t, map[string]string{"p.rego": "package gatehouse\n\ndecision := {\"allow\": input.now > input.now_minute}\n"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rev2.DecideInput(ctx, at(minute+55)); err != nil {
		t.Fatal(err)
	}
	if _, cached, err := rev2.DecideInput(ctx, at(minute+55)); err != nil || !cached {
		t.Fatalf("the second decision of the same input: cached %v, %v", cached, err)
	}
	// A prefetch is started (flagged) before the hit returns; none was.
	if rev2.prefetching.Load() || rev2.CacheStats().Prefetched != 0 {
		t.Errorf("a prefetch for a policy that reads now")
	}
}
