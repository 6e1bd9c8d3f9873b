package policies

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Times in Europe/Berlin (UTC+1 in December 2026).
const (
	wed1000 = 1795597200               // Wednesday 2026-11-25 10:00
	wed1959 = wed1000 + 9*3600 + 59*60 // 19:59, the last minute of the library's working hours
	fri1959 = wed1959 + 2*86400        // Friday 19:59
	sun2359 = fri1959 + 2*86400 + 4*3600
)

// TestClockCopy: the clock copy of a policy is used only where it
// accounts for every read of the time.
func TestClockCopy(t *testing.T) {
	const pkg = "package gatehouse\n\n"
	cases := []struct {
		name   string
		policy string
		copy   bool
	}{
		{"no time", `decision := {"allow": input.user.sub == "a"}`, false},
		{"now_minute", `decision := {"allow": input.now_minute > 5}`, true},
		{"now", `decision := {"allow": input.now > 5}`, true},
		{"both, in functions and comprehensions", `
f(x) := x + input.now
ts := [t | some t in [input.now_minute]]
decision := {"allow": f(1) > ts[0]}`, true},
		{"in a reference to data", `decision := {"allow": data.x[input.now_minute] == 1}`, true},
		{"an import of the field", `import input.now_minute as m
decision := {"allow": m > 5}`, false},
		{"a with modifier replacing it", `
late if input.now_minute > 100
decision := {"allow": x} if x := late with input.now_minute as 5
default decision := false`, false},
		{"a with modifier replacing something else", `
late if input.now_minute > input.session.age_s
decision := {"allow": x} if x := late with input.session.age_s as 5
default decision := false`, true},
	}
	for _, c := range cases {
		rev, err := Load(context.Background(), writePolicy(t, map[string]string{"p.rego": pkg + c.policy}), Options{})
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := rev.clocked != nil; got != c.copy {
			t.Errorf("%s: clock copy %v, want %v", c.name, got, c.copy)
		}
	}
	lib, err := Load(context.Background(), ".", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if lib.clocked == nil {
		t.Error("the library is decided without its clock copy")
	}
}

// TestClockedDecisions decides sequences of inputs whose time moves over
// minute turns, the end of working hours, weekends and grant expiry,
// through the cache and without it (the policy as written): every
// decision must be the same. Decisions that never read the time must
// come from the cache after the first.
func TestClockedDecisions(t *testing.T) {
	const pkg = "package gatehouse\n\n"
	ctx := context.Background()
	times := []int64{wed1000, wed1000 + 30, wed1000 + 61, wed1959, wed1959 + 59, wed1959 + 60, wed1959 + 3600,
		fri1959, fri1959 + 60, sun2359, sun2359 + 60, wed1000 + 3*3600}
	contractor := func(app, path string, grants ...Grant) func(now int64) *Input {
		return func(now int64) *Input {
			in := &Input{App: app, Now: now, NowMinute: MinuteOf(now), User: User{Sub: "c", Groups: []string{"contractors"}},
				Request: Request{Method: "GET", Path: path, PathLower: strings.ToLower(path)}, RevokedResources: []string{}}
			var active []Grant
			for _, g := range grants {
				if g.ExpiresAt > now { // as Gatehouse gives them
					active = append(active, g)
				}
			}
			in.SetGrants(active)
			return in
		}
	}
	staff := func(app, path string) func(now int64) *Input {
		return func(now int64) *Input {
			in := contractor(app, path)(now)
			in.User.Groups = []string{"staff", "managers"}
			return in
		}
	}
	cases := []struct {
		name     string
		files    map[string]string // nil: the library
		input    func(now int64) *Input
		timeless bool // the decision never reads the time (nor do its inputs change)
		changes  bool // the decision changes with the time
	}{
		{"library: staff", nil, staff("payroll", "/payslips/1"), true, false},
		{"library: staff in an app without hours", nil, staff("projects", "/work/1"), true, false},
		{"library: a contractor without a grant", nil, contractor("payroll", "/reports"), false, true},
		{"library: a contractor with a grant", nil, contractor("payroll", "/reports",
			Grant{Resource: "payroll-reports", ExpiresAt: wed1959 + 30}), false, true},
		{"library: a contractor with a grant in an app without hours", nil, contractor("projects", "/work/1",
			Grant{Resource: "projects-app", ExpiresAt: sun2359 + 3600}), true, false},
		{"a grant that expires by input.now", map[string]string{"p.rego": pkg + `
default decision := {"allow": false}
decision := {"allow": true} if "staff" in input.user.groups
else := {"allow": true, "reason": "grant"} if {
	some g in input.grants
	g.expires_at > input.now
}`}, contractor("x", "/", Grant{Resource: "r", ExpiresAt: wed1959 + 90}), false, true},
		{"the same, for staff", map[string]string{"p.rego": pkg + `
default decision := {"allow": false}
decision := {"allow": true} if "staff" in input.user.groups
else := {"allow": true, "reason": "grant"} if {
	some g in input.grants
	g.expires_at > input.now
}`}, staff("x", "/"), true, false},
		{"time in a header only", map[string]string{"p.rego": pkg + `
decision := {"allow": true, "headers": {"X-Minute": format_int(input.now_minute, 10)}} if "contractors" in input.user.groups
else := {"allow": true}`}, contractor("x", "/"), false, true},
		{"time in a function in another package", map[string]string{
			"lib.rego": "package lib\n\nhour(tz) := h if [h, _, _] := time.clock([input.now_minute * 1000000000, tz])\n",
			"p.rego": pkg + `import data.lib
decision := {"allow": lib.hour("Europe/Berlin") < 20}`}, staff("x", "/"), false, true},
		{"time read but not needed for the result", map[string]string{"p.rego": pkg + `
decision := {"allow": x >= 0} if x := input.now - input.now`}, staff("x", "/"), false, false},
		{"time behind a with modifier on another field", map[string]string{"p.rego": pkg + `
late if input.now_minute > input.session.age_s
decision := {"allow": x} if x := late with input.session.age_s as 5
default decision := false`}, staff("x", "/"), false, false},
		{"time replaced by a with modifier", map[string]string{"p.rego": pkg + `
late if input.now_minute > 100
decision := {"allow": x} if x := late with input.now_minute as 5
default decision := false`}, staff("x", "/"), false, false},
	}
	lib, err := Load(ctx, ".", Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		rev := lib
		if c.files != nil {
			if rev, err = Load(ctx, writePolicy(t, c.files), Options{Timeout: 10 * time.Second}); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		rev.cache = newDecisionCache(DefaultCacheSize)
		seen := map[string]bool{}
		for i, now := range times {
			in := c.input(now)
			got, cached, err := rev.DecideInput(ctx, in)
			want, werr := rev.Decide(ctx, in.Value())
			if err != nil || werr != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("%s at %s (cached %v): %+v, %v; as written: %+v, %v", c.name, time.Unix(now, 0).UTC(), cached, got, err, want, werr)
			}
			if c.timeless && i > 0 && !cached {
				t.Errorf("%s at %s: decided again", c.name, time.Unix(now, 0).UTC())
			}
			seen[fmt.Sprint(got)] = true
		}
		if c.changes != (len(seen) > 1) {
			t.Errorf("%s: %d different decisions over the times", c.name, len(seen))
		}
	}
}

// TestIdleMinuteTurn: after an idle minute turn, the library's decisions
// that did not read the time are still cached; those that did are not,
// and a request decides them afresh.
func TestIdleMinuteTurn(t *testing.T) {
	ctx := context.Background()
	rev, err := Load(ctx, ".", Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	evals := func(mix []*Input) (misses int) {
		for _, in := range mix {
			_, cached, err := rev.DecideInput(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			if !cached {
				misses++
			}
		}
		return misses
	}
	for _, c := range []struct {
		app           string
		turned, after int
	}{
		{"projects", 1999, 0},
		{"payroll", 1999, 399}, // the contractors' decisions read the time
	} {
		if got := evals(appMix(c.app, wed1000)); got != c.turned {
			t.Errorf("%s: %d evaluations of an empty cache, want %d", c.app, got, c.turned)
		}
		if got := evals(appMix(c.app, wed1000+120)); got != c.after {
			t.Errorf("%s: %d evaluations after two idle minutes, want %d", c.app, got, c.after)
		}
	}
}
