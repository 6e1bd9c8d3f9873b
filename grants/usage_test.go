package grants

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// usageConformance is the part of the conformance suite about usage
// records: merged (counts add up, the last use only moves later), by
// day, per app, user, resource and way of access.
func usageConformance(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	day := t0.UTC().Truncate(24 * time.Hour).Add(10 * time.Hour) // 10:00 UTC
	t.Run("usage: merged by day, read for a period", func(t *testing.T) {
		s := open(t)
		for _, bad := range []Usage{
			{User: alice, Resource: "r", Via: ViaStanding, Count: 1, Last: day.Unix()},
			{App: "payroll", User: alice, Resource: "a|b", Via: ViaStanding, Count: 1, Last: day.Unix()},
			{App: "payroll", User: alice, Resource: "{x}", Via: ViaStanding, Count: 1, Last: day.Unix()},
			{App: "payroll", User: User{Sub: "x"}, Resource: "r", Via: ViaStanding, Count: 1, Last: day.Unix()},
			{App: "payroll", User: alice, Resource: "r", Via: "magic", Count: 1, Last: day.Unix()},
			{App: "payroll", User: alice, Resource: "r", Via: ViaGrant, Count: 0, Last: day.Unix()},
			{App: "payroll", User: alice, Resource: string(make([]byte, 200)), Via: ViaGrant, Count: 1, Last: day.Unix()},
		} {
			if err := s.AddUsage(ctx, []Usage{bad}); !errors.Is(err, ErrInvalid) {
				t.Errorf("AddUsage(%+v): %v, want ErrInvalid", bad, err)
			}
		}
		add := func(us ...Usage) {
			t.Helper()
			if err := s.AddUsage(ctx, us); err != nil {
				t.Fatalf("AddUsage: %v", err)
			}
		}
		add(Usage{App: "payroll", User: alice, Email: "alice@example.com", Resource: "/payslips", Via: ViaStanding, Count: 3, Last: day.Unix()},
			Usage{App: "payroll", User: bob, Resource: "payroll-reports", Via: ViaGrant, Count: 1, Last: day.Unix()})
		// An older last use does not move it back; counts add up.
		add(Usage{App: "payroll", User: alice, Resource: "/payslips", Via: ViaStanding, Count: 2, Last: day.Add(-time.Hour).Unix()})
		// The next day, and another app.
		add(Usage{App: "payroll", User: alice, Resource: "/payslips", Via: ViaStanding, Count: 5, Last: day.Add(24 * time.Hour).Unix()},
			Usage{App: "legacy", User: alice, Resource: "legacy-app", Via: ViaStanding, Count: 7, Last: day.Unix()})
		if err := s.AddUsage(ctx, nil); err != nil {
			t.Errorf("AddUsage of nothing: %v", err)
		}

		got, err := s.Usage(ctx, "payroll", day.Add(-10*time.Hour), day.Add(14*time.Hour)) // the first day
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].User != alice || got[0].Count != 5 || got[0].Last != day.Unix() || got[0].Email != "alice@example.com" ||
			got[0].Resource != "/payslips" || got[0].Via != ViaStanding || got[0].App != "payroll" ||
			got[1].User != bob || got[1].Via != ViaGrant || got[1].Count != 1 {
			t.Errorf("the first day: %v", got)
		}
		got, _ = s.Usage(ctx, "payroll", day.Add(-10*time.Hour), day.Add(38*time.Hour)) // both days
		if len(got) != 2 || got[0].Count != 10 || got[0].Last != day.Add(24*time.Hour).Unix() {
			t.Errorf("both days: %v", got)
		}
		got, _ = s.Usage(ctx, "payroll", day.Add(14*time.Hour), day.Add(38*time.Hour)) // the second day only
		if len(got) != 1 || got[0].Count != 5 {
			t.Errorf("the second day: %v", got)
		}
		if got, err := s.Usage(ctx, "legacy", day.Add(-24*time.Hour), day.Add(24*time.Hour)); err != nil || len(got) != 1 || got[0].Count != 7 {
			t.Errorf("another app: %v %v", got, err)
		}
		for _, c := range []struct {
			app      string
			from, to time.Time
		}{{"payroll", day, day}, {"payroll", day.Add(48 * time.Hour), day.Add(72 * time.Hour)}, {"nobody", day, day.Add(time.Hour)}, {"a|b", day, day.Add(time.Hour)}} {
			if got, err := s.Usage(ctx, c.app, c.from, c.to); err != nil || len(got) != 0 {
				t.Errorf("Usage(%s, %s..%s): %v %v, want none", c.app, c.from, c.to, got, err)
			}
		}

		// Nodes write at once: nothing is lost.
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 10 {
					if err := s.AddUsage(ctx, []Usage{{App: "busy", User: bob, Resource: "x", Via: ViaStanding, Count: 1, Last: day.Unix()}}); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if got, _ := s.Usage(ctx, "busy", day, day.Add(time.Hour)); len(got) != 1 || got[0].Count != 40 {
			t.Errorf("concurrent adds: %v", got)
		}
	})
}

func TestUsageDays(t *testing.T) {
	d := time.Date(2026, 1, 30, 23, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		from, to time.Time
		want     int
	}{{d, d.Add(time.Hour), 1}, {d, d.Add(time.Hour + time.Second), 2}, {d, d, 0}, {d, d.Add(-time.Hour), 0}, {d, d.Add(90 * 24 * time.Hour), 91},
		{d, d.Add(10 * UsageRetention), int(UsageRetention/(24*time.Hour)) + 2}} {
		if got := usageDays(c.from, c.to); len(got) != c.want {
			t.Errorf("usageDays(%s, %s): %d days, want %d", c.from, c.to, len(got), c.want)
		}
	}
}

func TestUsagePurged(t *testing.T) {
	ctx := context.Background()
	s := NewMemory().(*kvStore)
	defer s.Close()
	old := time.Now().Add(-UsageRetention - 48*time.Hour)
	_ = s.AddUsage(ctx, []Usage{{App: "a", User: alice, Resource: "r", Via: ViaStanding, Count: 1, Last: old.Unix()},
		{App: "a", User: alice, Resource: "r", Via: ViaStanding, Count: 1, Last: time.Now().Unix()}})
	if err := s.purge(time.Now()); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Usage(ctx, "a", old.Add(-time.Hour), time.Now().Add(time.Hour)); len(got) != 1 || got[0].Count != 1 {
		t.Errorf("after the purge: %v", got)
	}
}
