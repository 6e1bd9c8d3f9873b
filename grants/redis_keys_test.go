package grants

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

// TestRedisKeysExpire writes one of everything Gatehouse keeps in Redis
// and checks every key it finds against the table of docs/redis.md: each
// key a user, a session, a request or a day brings expires, no later than
// it must; only the global indexes (trimmed as they are written) and
// records kept until an operator or a provisioning system removes them
// live on. A key of no known kind fails the test: add it to the table,
// here and in the docs.
func TestRedisKeysExpire(t *testing.T) {
	ctx := context.Background()
	r := redistest.Start(t, redistest.Options{})
	s, err := OpenRedis(r.URL(), RedisOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	const day = 24 * time.Hour
	// An hour's grant every week for 20 weeks: the user's hash keeps the
	// last 5 (the others ended more than 30 days before the last write).
	var g Grant
	for week := range 20 {
		at := now.Add(time.Duration(week-19) * 7 * day)
		if g, err = s.AddGrant(ctx, Grant{User: alice, Email: "alice@example.com", Resource: "db", CreatedAt: at.Unix(), ExpiresAt: at.Add(time.Hour).Unix()}); err != nil {
			t.Fatal(err)
		}
	}
	imported := User{Iss: alice.Iss, Sub: "imported"}
	if err := Import(ctx, s, []Grant{{User: imported, Email: "imported@example.com", Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()}},
		[]Request{{App: "payroll", Resource: "db", User: imported, Duration: 60, MaxDuration: 60, CreatedAt: now.Unix()}}); err != nil {
		t.Fatal(err)
	}
	admin := r.Client()
	defer admin.Close()
	if n := admin.HLen(ctx, kGrants(alice.Key())).Val(); n != 5 {
		t.Errorf("alice's grants hash holds %d grants after 20 weekly ones, want 5", n)
	}
	req, err := s.CreateRequest(ctx, Request{App: "payroll", Resource: "db", User: bob, Email: "bob@example.com", Duration: 60, MaxDuration: 60, CreatedAt: now.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Decide(ctx, req.ID, Decision{Approve: true, By: "carol", Now: now}); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.RevokeGrant(ctx, g.ID, "ops", now)
	must(err)
	must(s.RevokeSession(ctx, alice, "sid-1", now.Add(time.Hour)))
	must(s.RevokeUser(ctx, bob, now))
	must(s.RevokeIdPSession(ctx, IdPSession{Iss: alice.Iss, SID: "idp-1"}, now.Add(time.Hour)))
	_, err = s.FirstUse(ctx, "jti-1", now, now.Add(time.Minute))
	must(err)
	must(s.NoteEmail(ctx, alice, "alice@corp.example"))
	must(s.PutPending(ctx, "k1", []byte("sealed"), now, 10*time.Minute))
	must(s.AppendHistory(ctx, HistoryEntry{At: now.Unix(), App: "payroll", Event: "grant approved"}, 30*day))
	must(s.AddUsage(ctx, []Usage{{App: "payroll", User: alice, Resource: "db", Via: ViaGrant, Count: 1, Last: now.Unix()}}))
	c := Campaign{ID: "c1", App: "payroll", Review: "quarterly", Scope: ScopeAll, OnTimeout: ActionKeep,
		PeriodStart: now.Add(-90 * day).Unix(), PeriodEnd: now.Unix(), OpenedAt: now.Unix(), EndsAt: now.Add(14 * day).Unix(),
		Items: []ReviewItem{{ID: "i1", User: alice, Resource: "db", Source: ViaStanding}}}
	_, _, err = s.OpenReview(ctx, c)
	must(err)
	_, err = s.DecideReviewItem(ctx, "c1", "i1", ItemDecision{Action: ActionRevoke, By: "carol", At: now.Unix(), Reason: "unused"})
	must(err)
	must(s.RevokeResource(ctx, ResourceRevocation{User: alice, App: "payroll", Resource: "db", At: now.Unix(), By: "carol"}))
	_, err = s.PutSCIMUser(ctx, SCIMUser{UserName: "alice", ExternalID: "e1", Active: true}, now)
	must(err)

	// The longest each kind of key may live from now; 0: no expiry.
	u, hex := `\{[0-9a-f]{32}\}`, `[0-9a-f]{32}`
	table := []struct {
		pattern string
		max     time.Duration
	}{
		{`^gh:` + u + `:g$`, time.Hour + keep}, // the last grant's end, then retention
		{`^gh:gid:\{[a-z0-9]+\}$`, time.Hour + keep},
		{`^gh:` + u + `:r$`, keep},
		{`^gh:` + u + `:s:sid-1$`, time.Hour},
		{`^gh:idps:\{` + hex + `\}$`, time.Hour},
		{`^gh:once:\{` + hex + `\}$`, time.Minute},
		{`^gh:req:\{[a-z0-9]+\}$`, keep},
		{`^gh:req:\{[a-z0-9]+\}:d$`, keep},
		{`^gh:email:[a-z.@]+$`, 10 * keep},
		{`^gh:pending:\{k1\}$`, 10 * time.Minute},
		{`^gh:usage:\{payroll\}:\d{8}:[nt]$`, UsageRetention + day},
		{`^gh:usage:\{payroll\}:users$`, UsageRetention},
		{`^gh:rv:\{c1\}(:d)?$`, 14*day + ReviewRetention},
		{`^gh:rvs:payroll$`, 2 * ReviewRetention},
		{`^gh:(reqs|grant_users|history|revocations|resrevs)$`, 0},
		{`^gh:scim:(u:\{[a-z0-9]+\}|ids|ix:[a-z]+:` + hex + `|name:` + hex + `)$`, 0},
	}
	keys, err := admin.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]bool, len(table))
	for _, k := range keys {
		ttl := admin.TTL(ctx, k).Val()
		known := false
		for i, e := range table {
			if !regexp.MustCompile(e.pattern).MatchString(k) {
				continue
			}
			known, seen[i] = true, true
			switch {
			case e.max == 0 && ttl >= 0:
				t.Errorf("%s expires in %s: a global index or a record kept until removed should not", k, ttl)
			case e.max > 0 && (ttl <= 0 || ttl > e.max):
				t.Errorf("%s: TTL %s, want one of at most %s", k, ttl, e.max)
			}
		}
		if !known {
			t.Errorf("%s (TTL %s) is of no kind in the table: add it here and to docs/redis.md", k, ttl)
		}
	}
	for i, e := range table {
		if !seen[i] {
			t.Errorf("no key matches %s: the test no longer writes it, or its name changed", e.pattern)
		}
	}
}
