package grants

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

var (
	t0    = time.Unix(1_795_597_200, 0)
	alice = User{Iss: "https://idp.example", Sub: "alice"}
	bob   = User{Iss: "https://idp.example", Sub: "bob"}
)

// conformance runs the one suite every Store must pass.
func conformance(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	usageConformance(t, open)
	reviewConformance(t, open)

	t.Run("history: kept in order, by app, for as long as asked", func(t *testing.T) {
		s := open(t)
		const day = 24 * time.Hour
		add := func(at time.Time, app, event string, fields map[string]string) {
			t.Helper()
			if err := s.AppendHistory(ctx, HistoryEntry{At: at.Unix(), App: app, Event: event, Fields: fields}, 30*day); err != nil {
				t.Fatal(err)
			}
		}
		add(t0.Add(-40*day), "projects", "grant approved", map[string]string{"grant_id": "g0"}) // forgotten by the next append
		add(t0.Add(-2*day), "projects", "grant approved", map[string]string{"grant_id": "g1", "approved_by": "carol@example.com"})
		add(t0.Add(-day), "", "user de-provisioned", map[string]string{"user": "bob"})
		add(t0.Add(-day), "payroll", "grant revoked", map[string]string{"grant_id": "g2"})
		add(t0, "projects", "grant revoked", map[string]string{"grant_id": "g1"})
		if err := s.AppendHistory(ctx, HistoryEntry{App: "x"}, day); !errors.Is(err, ErrInvalid) {
			t.Errorf("an entry without event and time: %v", err)
		}
		all, err := s.History(ctx, HistoryFilter{Since: t0.Add(-365 * day)})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range all {
			got = append(got, e.App+":"+e.Event+":"+e.Fields["grant_id"]+e.Fields["user"])
			if e.ID == "" {
				t.Error("an entry without an id")
			}
		}
		want := "projects:grant approved:g1 :user de-provisioned:bob payroll:grant revoked:g2 projects:grant revoked:g1"
		if g := strings.Join(got, " "); g != want && g != strings.Replace(want, ":user de-provisioned:bob payroll:grant revoked:g2", "payroll:grant revoked:g2 :user de-provisioned:bob", 1) {
			t.Errorf("history %q\nwant %q (older than 30 days forgotten, oldest first)", g, want)
		}
		projects, _ := s.History(ctx, HistoryFilter{Since: t0.Add(-365 * day), App: "projects"})
		if len(projects) != 3 {
			t.Errorf("projects' history (with operators' actions): %d entries, want 3", len(projects))
		}
		recent, _ := s.History(ctx, HistoryFilter{Since: t0.Add(-time.Hour)})
		if len(recent) != 1 || recent[0].Fields["grant_id"] != "g1" {
			t.Errorf("since an hour ago: %+v", recent)
		}
		if last, _ := s.History(ctx, HistoryFilter{Since: t0.Add(-365 * day), Limit: 1}); len(last) != 1 || last[0].At != t0.Unix() {
			t.Errorf("limit 1: %+v", last)
		}
	})

	t.Run("grants and the exact expiry boundary", func(t *testing.T) {
		s := open(t)
		if _, err := s.AddGrant(ctx, Grant{User: alice, Resource: "db", CreatedAt: t0.Unix(), ExpiresAt: t0.Unix()}); !errors.Is(err, ErrInvalid) {
			t.Errorf("a grant expiring at creation: %v", err)
		}
		if _, err := s.AddGrant(ctx, Grant{User: User{Sub: "x"}, Resource: "db", CreatedAt: 1, ExpiresAt: 2}); !errors.Is(err, ErrInvalid) {
			t.Errorf("a grant without an issuer: %v", err)
		}
		g, err := s.AddGrant(ctx, Grant{User: alice, Email: "Alice@Example.com", Resource: "db", Reason: "incident",
			CreatedAt: t0.Unix(), ExpiresAt: t0.Add(time.Hour).Unix(), ApprovedBy: "carol"})
		if err != nil || g.ID == "" {
			t.Fatalf("AddGrant: %+v %v", g, err)
		}
		for _, c := range []struct {
			now  time.Time
			want int
		}{{t0, 1}, {t0.Add(time.Hour - time.Second), 1}, {t0.Add(time.Hour), 0}, {t0.Add(2 * time.Hour), 0}} {
			st, err := s.Lookup(ctx, alice, "s1", c.now)
			if err != nil || len(st.Grants) != c.want {
				t.Errorf("Lookup at %s: %d grants, %v; want %d", c.now.Sub(t0), len(st.Grants), err, c.want)
			}
		}
		if st, err := s.Lookup(ctx, bob, "s1", t0); err != nil || len(st.Grants) != 0 {
			t.Errorf("bob sees alice's grant (%v)", err)
		}
		if gs, err := s.Grants(ctx, GrantFilter{Now: t0.Add(2 * time.Hour)}); err != nil || len(gs) != 0 {
			t.Errorf("active grants after expiry: %v %v", gs, err)
		}
		if gs, _ := s.Grants(ctx, GrantFilter{All: true, User: &alice}); len(gs) != 1 || gs[0].Email != "alice@example.com" {
			t.Errorf("access review: %+v", gs)
		}
		r, err := s.RevokeGrant(ctx, g.ID, "ops", t0.Add(time.Minute))
		if err != nil || r.RevokedBy != "ops" {
			t.Fatalf("RevokeGrant: %+v %v", r, err)
		}
		if st, err := s.Lookup(ctx, alice, "s1", t0.Add(2*time.Minute)); err != nil || len(st.Grants) != 0 {
			t.Errorf("a revoked grant is still active (%v)", err)
		}
		if _, err := s.RevokeGrant(ctx, "nope", "ops", t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("revoking an unknown grant: %v", err)
		}
		if us, _ := s.Users(ctx, "ALICE@example.com"); len(us) != 1 || us[0] != alice {
			t.Errorf("Users(email): %v", us)
		}
		// An address that extends another's with "/" is another address.
		mallory := User{Iss: alice.Iss, Sub: "mallory"}
		if _, err := s.AddGrant(ctx, Grant{User: mallory, Email: "bob@example.com/x", Resource: "db",
			CreatedAt: t0.Unix(), ExpiresAt: t0.Add(time.Hour).Unix()}); err != nil {
			t.Fatal(err)
		}
		if us, err := s.Users(ctx, "bob@example.com"); err != nil || len(us) != 0 {
			t.Errorf("Users(bob@example.com) = %v, %v: want none", us, err)
		}
		if us, err := s.Users(ctx, "bob@example.com/x"); err != nil || len(us) != 1 || us[0] != mallory {
			t.Errorf("Users(bob@example.com/x) = %v, %v", us, err)
		}
	})

	t.Run("a user's grants past retention are forgotten at the next write", func(t *testing.T) {
		s := open(t)
		const day = 24 * time.Hour
		add := func(u User, resource string, at time.Time, d time.Duration) Grant {
			t.Helper()
			g, err := s.AddGrant(ctx, Grant{User: u, Resource: resource, CreatedAt: at.Unix(), ExpiresAt: at.Add(d).Unix()})
			if err != nil {
				t.Fatal(err)
			}
			return g
		}
		long := add(alice, "archive", t0, 365*day)
		revoked := add(alice, "vault", t0, 365*day)
		if _, err := s.RevokeGrant(ctx, revoked.ID, "ops", t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		bobs := add(bob, "db", t0, time.Hour)
		// An hour's grant every week for 20 weeks: at the last write, those
		// of weeks 0 to 14 ended more than the 30 days' retention ago.
		var weekly []Grant
		var last time.Time
		for week := range 20 {
			last = t0.Add(time.Duration(week) * 7 * day)
			weekly = append(weekly, add(alice, "db", last, time.Hour))
		}
		gs, err := s.Grants(ctx, GrantFilter{User: &alice, All: true, Now: last})
		if err != nil {
			t.Fatal(err)
		}
		kept := map[string]bool{}
		for _, g := range gs {
			kept[g.ID] = true
		}
		want := append([]Grant{long}, weekly[15:]...)
		if len(gs) != len(want) {
			t.Errorf("alice's stored grants after 22 writes: %d, want %d (the long one and weeks 15 to 19)", len(gs), len(want))
		}
		for _, g := range want {
			if !kept[g.ID] {
				t.Errorf("grant of %s (ends %s after t0) was forgotten", g.Resource, time.Unix(g.ExpiresAt, 0).Sub(t0))
			}
		}
		for _, g := range append([]Grant{revoked}, weekly[:15]...) {
			if kept[g.ID] {
				t.Errorf("grant of %s (created %s after t0, revoked at %d) is kept past retention", g.Resource, time.Unix(g.CreatedAt, 0).Sub(t0), g.RevokedAt)
			}
			if _, err := s.RevokeGrant(ctx, g.ID, "ops", last); !errors.Is(err, ErrNotFound) {
				t.Errorf("revoking a forgotten grant: %v, want ErrNotFound", err)
			}
		}
		if st, err := s.Lookup(ctx, alice, "", last); err != nil || len(st.Grants) != 2 || len(st.Expired) != 0 {
			t.Errorf("Lookup at the last write: %d active, %d expired, %v; want 2, 0", len(st.Grants), len(st.Expired), err)
		}
		// Only the user written to is pruned.
		if gs, err := s.Grants(ctx, GrantFilter{User: &bob, All: true}); err != nil || len(gs) != 1 || gs[0].ID != bobs.ID {
			t.Errorf("bob's grants: %v %v", gs, err)
		}
	})

	t.Run("Import writes what AddGrant and CreateRequest write", func(t *testing.T) {
		s := open(t)
		gs := []Grant{
			{User: alice, Email: "alice@example.com", Resource: "db", CreatedAt: t0.Unix(), ExpiresAt: t0.Add(time.Hour).Unix()},
			{User: alice, Resource: "wiki", CreatedAt: t0.Unix(), ExpiresAt: t0.Add(2 * time.Hour).Unix()},
		}
		rs := []Request{{App: "payroll", Resource: "db", User: bob, Email: "bob@example.com", Duration: 60, MaxDuration: 60, CreatedAt: t0.Unix()}}
		if err := Import(ctx, s, gs, rs); err != nil {
			t.Fatal(err)
		}
		if gs[0].ID == "" || rs[0].ID == "" || rs[0].Status != Pending {
			t.Errorf("ids and status not filled in: %+v %+v", gs[0], rs[0])
		}
		if st, err := s.Lookup(ctx, alice, "", t0.Add(90*time.Minute)); err != nil || len(st.Grants) != 1 || st.Grants[0].Resource != "wiki" || len(st.Expired) != 1 {
			t.Errorf("Lookup after Import: %+v %v", st, err)
		}
		if r, err := s.RevokeGrant(ctx, gs[1].ID, "ops", t0); err != nil || r.Resource != "wiki" {
			t.Errorf("revoking an imported grant: %+v %v", r, err)
		}
		if got, err := s.Requests(ctx, RequestFilter{Status: Pending}); err != nil || len(got) != 1 || got[0].ID != rs[0].ID {
			t.Errorf("pending after Import: %+v %v", got, err)
		}
		if _, g, err := s.Decide(ctx, rs[0].ID, Decision{Approve: true, By: "carol", Now: t0}); err != nil || g == nil {
			t.Errorf("deciding an imported request: %v", err)
		}
		for email, want := range map[string]User{"alice@example.com": alice, "bob@example.com": bob} {
			if us, err := s.Users(ctx, email); err != nil || len(us) != 1 || us[0] != want {
				t.Errorf("Users(%s) after Import: %v %v", email, us, err)
			}
		}
		if err := Import(ctx, s, []Grant{{User: alice, Resource: "db"}}, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("importing a grant without times: %v", err)
		}
	})

	t.Run("emails seen at sign-in", func(t *testing.T) {
		s := open(t)
		carol := User{Iss: "https://idp.example.com", Sub: "carol"}
		if us, err := s.Users(ctx, "carol@example.com"); err != nil || len(us) != 0 {
			t.Fatalf("Users before any sign-in: %v, %v", us, err)
		}
		// Signing in twice records carol once; the lookup ignores case.
		for range 2 {
			if err := s.NoteEmail(ctx, carol, "Carol@Example.com"); err != nil {
				t.Fatal(err)
			}
		}
		if us, err := s.Users(ctx, "carol@example.COM"); err != nil || len(us) != 1 || us[0] != carol {
			t.Errorf("Users after sign-in: %v, %v", us, err)
		}
		// Another user with the address (reassigned, or another IdP):
		// both are named, so the CLI can refuse to guess.
		other := User{Iss: "https://other.example", Sub: "c2"}
		if err := s.NoteEmail(ctx, other, "carol@example.com"); err != nil {
			t.Fatal(err)
		}
		if us, err := s.Users(ctx, "carol@example.com"); err != nil || len(us) != 2 {
			t.Errorf("Users of a shared address: %v, %v", us, err)
		}
		if err := s.NoteEmail(ctx, User{Sub: "x"}, "x@example.com"); !errors.Is(err, ErrInvalid) {
			t.Errorf("NoteEmail without an issuer: %v", err)
		}
		if err := s.NoteEmail(ctx, carol, ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("NoteEmail without an email: %v", err)
		}
	})

	t.Run("SCIM users", func(t *testing.T) { scimConformance(t, open) })

	t.Run("pending values: taken once, kept until the caller's clock says", func(t *testing.T) {
		s := open(t)
		big := make([]byte, 700<<10) // a large form, sealed
		for i := range big {
			big[i] = byte('A' + i%26)
		}
		if err := s.PutPending(ctx, "k1", big, t0, 10*time.Minute); err != nil {
			t.Fatalf("PutPending: %v", err)
		}
		if _, err := s.TakePending(ctx, "k2", t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("taking a key never put: %v", err)
		}
		got, err := s.TakePending(ctx, "k1", t0.Add(10*time.Minute-time.Millisecond))
		if err != nil || string(got) != string(big) {
			t.Fatalf("TakePending just before the end: %d bytes, %v", len(got), err)
		}
		if _, err := s.TakePending(ctx, "k1", t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("a second take: %v, want ErrNotFound", err)
		}
		// Expired by the time given, whatever the store's own expiry.
		_ = s.PutPending(ctx, "k3", []byte("sealed"), t0, 10*time.Minute)
		if _, err := s.TakePending(ctx, "k3", t0.Add(10*time.Minute)); !errors.Is(err, ErrNotFound) {
			t.Errorf("taking at the exact expiry: %v, want ErrNotFound", err)
		}
		if _, err := s.TakePending(ctx, "k3", t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("an expired value is deleted by the take that found it expired: %v", err)
		}
		// A second put replaces the first.
		_ = s.PutPending(ctx, "k4", []byte("first"), t0, time.Minute)
		_ = s.PutPending(ctx, "k4", []byte("second"), t0, time.Minute)
		if got, err := s.TakePending(ctx, "k4", t0); err != nil || string(got) != "second" {
			t.Errorf("after two puts: %q %v", got, err)
		}
		// Of concurrent takes, exactly one gets the value.
		_ = s.PutPending(ctx, "k5", []byte("once"), t0, time.Minute)
		var wg sync.WaitGroup
		var won atomic.Int32
		for range 8 {
			wg.Go(func() {
				if v, err := s.TakePending(ctx, "k5", t0); err == nil && string(v) == "once" {
					won.Add(1)
				} else if !errors.Is(err, ErrNotFound) {
					t.Errorf("a concurrent take: %v", err)
				}
			})
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Errorf("%d concurrent takes got the value, want 1", won.Load())
		}
		for _, c := range []struct {
			key    string
			sealed []byte
			ttl    time.Duration
		}{
			{"", []byte("x"), time.Minute}, {"a/b", []byte("x"), time.Minute}, {"a{b}", []byte("x"), time.Minute},
			{"a b", []byte("x"), time.Minute}, {string(make([]byte, 129)), []byte("x"), time.Minute},
			{"ok", nil, time.Minute}, {"ok", []byte("x"), 0}, {"ok", []byte("x"), 25 * time.Hour},
		} {
			if err := s.PutPending(ctx, c.key, c.sealed, t0, c.ttl); !errors.Is(err, ErrInvalid) {
				t.Errorf("PutPending(%q, %d bytes, %s): %v, want ErrInvalid", c.key, len(c.sealed), c.ttl, err)
			}
		}
		if _, err := s.TakePending(ctx, "a{b}", t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("taking an invalid key: %v", err)
		}
	})

	t.Run("requests and decisions", func(t *testing.T) {
		s := open(t)
		base := Request{App: "payroll", Resource: "payroll-admin", Reason: "close", User: bob, Email: "bob@example.com",
			Duration: 2 * 3600, MaxDuration: 4 * 3600, CreatedAt: t0.Unix()}
		bad := base
		bad.Duration = 5 * 3600
		if _, err := s.CreateRequest(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("a duration over the cap: %v", err)
		}
		r, err := s.CreateRequest(ctx, base)
		if err != nil || r.Status != Pending {
			t.Fatalf("CreateRequest: %+v %v", r, err)
		}
		if got, err := s.Request(ctx, r.ID); err != nil || got.Resource != "payroll-admin" {
			t.Errorf("Request: %+v %v", got, err)
		}
		if rs, _ := s.Requests(ctx, RequestFilter{App: "payroll", Status: Pending}); len(rs) != 1 {
			t.Errorf("pending: %v", rs)
		}
		if rs, _ := s.Requests(ctx, RequestFilter{App: "other"}); len(rs) != 0 {
			t.Errorf("another app's requests: %v", rs)
		}
		now := t0.Add(time.Minute)
		dr, g, err := s.Decide(ctx, r.ID, Decision{Approve: true, By: "carol@example.com", MaxDuration: time.Hour, Now: now})
		if err != nil || g == nil || dr.Status != Approved || dr.GrantID != g.ID {
			t.Fatalf("Decide: %+v %+v %v", dr, g, err)
		}
		if g.ExpiresAt != now.Add(time.Hour).Unix() || g.ApprovedBy != "carol@example.com" || g.RequestID != r.ID {
			t.Errorf("grant %+v: the approver's 1h cap applies", g)
		}
		if _, _, err := s.Decide(ctx, r.ID, Decision{Approve: false, By: "dave", Now: now}); !errors.Is(err, ErrAlreadyDecided) {
			t.Errorf("deciding twice: %v", err)
		}
		if st, _ := s.Lookup(ctx, bob, "", now); len(st.Grants) != 1 {
			t.Errorf("bob's grants after approval: %v", st.Grants)
		}
		r2, _ := s.CreateRequest(ctx, base)
		if dr, g, err := s.Decide(ctx, r2.ID, Decision{By: "carol", Reason: "not now", Now: now}); err != nil || g != nil || dr.Status != Rejected {
			t.Errorf("reject: %+v %v %v", dr, g, err)
		}
		if _, _, err := s.Decide(ctx, "nope", Decision{Now: now}); !errors.Is(err, ErrNotFound) {
			t.Errorf("deciding an unknown request: %v", err)
		}
	})

	t.Run("concurrent approvals make exactly one grant", func(t *testing.T) {
		s := open(t)
		r, err := s.CreateRequest(ctx, Request{App: "a", Resource: "db", User: bob, Duration: 60, MaxDuration: 60, CreatedAt: t0.Unix()})
		if err != nil {
			t.Fatal(err)
		}
		var wins, lost atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				_, g, err := s.Decide(ctx, r.ID, Decision{Approve: true, By: string(rune('a' + i)), Now: t0})
				switch {
				case err == nil && g != nil:
					wins.Add(1)
				case errors.Is(err, ErrAlreadyDecided):
					lost.Add(1)
				default:
					t.Errorf("Decide: %v", err)
				}
			})
		}
		wg.Wait()
		gs, _ := s.Grants(ctx, GrantFilter{User: &bob, All: true})
		if wins.Load() != 1 || lost.Load() != 15 || len(gs) != 1 {
			t.Fatalf("%d wins, %d lost, %d grants; want 1, 15, 1", wins.Load(), lost.Load(), len(gs))
		}
	})

	t.Run("revocations and de-provisioning", func(t *testing.T) {
		s := open(t)
		if err := s.RevokeSession(ctx, alice, "sid-1", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeSession(ctx, alice, "sid-old", time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		st, _ := s.Lookup(ctx, alice, "sid-1", t0)
		st2, _ := s.Lookup(ctx, alice, "sid-2", t0)
		if !st.SessionRevoked || st2.SessionRevoked {
			t.Errorf("session revocation: %v %v", st.SessionRevoked, st2.SessionRevoked)
		}
		_, _ = s.AddGrant(ctx, Grant{User: bob, Resource: "db", CreatedAt: t0.Unix(), ExpiresAt: t0.Add(time.Hour).Unix()})
		_, _ = s.CreateRequest(ctx, Request{App: "a", Resource: "x", User: bob, Duration: 60, MaxDuration: 60, CreatedAt: t0.Unix()})
		done, err := Deprovision(ctx, s, bob, "hr", t0.Add(time.Minute))
		if err != nil || !done.SessionsRevoked || len(done.Grants) != 1 || len(done.Rejected) != 1 {
			t.Fatalf("Deprovision: %+v %v", done, err)
		}
		st, _ = s.Lookup(ctx, bob, "any", t0.Add(2*time.Minute))
		if len(st.Grants) != 0 || st.UserRevokedAt != t0.Add(time.Minute).Unix() || !st.Revoked(t0.Unix()) || st.Revoked(t0.Add(time.Hour).Unix()) {
			t.Errorf("after de-provisioning: %+v", st)
		}
		if rs, _ := s.Requests(ctx, RequestFilter{User: &bob}); len(rs) != 1 || rs[0].Status != Rejected {
			t.Errorf("pending requests after de-provisioning: %+v", rs)
		}
		rv, err := s.Revocations(ctx, time.Now())
		if err != nil || rv.Sessions[alice.Key()+"/sid-1"] == 0 || rv.Sessions[alice.Key()+"/sid-old"] != 0 || rv.Users[bob.Key()] != t0.Add(time.Minute).Unix() {
			t.Errorf("Revocations: %+v %v", rv, err)
		}
	})

	t.Run("back-channel logout: ended IdP sessions", func(t *testing.T) {
		s := open(t)
		copies := waitSubscribed(t, s)
		c := NewCache(s, time.Second)
		t.Cleanup(func() { _ = c.Close() })
		now := time.Now()
		if err := s.RevokeIdPSession(ctx, IdPSession{Iss: alice.Iss}, now.Add(time.Hour)); !errors.Is(err, ErrInvalid) {
			t.Errorf("an IdP session without a sid: %v", err)
		}
		if err := s.RevokeIdPSession(ctx, IdPSession{SID: "x"}, now.Add(time.Hour)); !errors.Is(err, ErrInvalid) {
			t.Errorf("an IdP session without an issuer: %v", err)
		}
		ended := IdPSession{Iss: alice.Iss, SID: "idp-sid-1"}
		other := IdPSession{Iss: alice.Iss, SID: "idp-sid-2"}
		elsewhere := IdPSession{Iss: "https://other.example", SID: "idp-sid-1"} // the same sid at another IdP
		if ended.Key() == elsewhere.Key() || len(ended.Key()) != 32 {
			t.Fatalf("keys: %q %q", ended.Key(), elsewhere.Key())
		}
		if c.IdPSessionRevoked(ended.Key()) || c.IdPSessionRevoked("") {
			t.Fatal("revoked before any back-channel logout")
		}
		until := now.Add(time.Hour)
		if err := s.RevokeIdPSession(ctx, ended, until); err != nil {
			t.Fatal(err)
		}
		// An IdP session that ended long ago is no longer listed.
		if err := s.RevokeIdPSession(ctx, IdPSession{Iss: alice.Iss, SID: "old"}, now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		rv, err := s.Revocations(ctx, now)
		if err != nil || rv.IdPSessions[ended.Key()] != until.Unix() || len(rv.IdPSessions) != 1 {
			t.Fatalf("Revocations: %+v %v", rv.IdPSessions, err)
		}
		// Every node's mirror hears of it through the store's events.
		deadline := time.Now().Add(2 * time.Second)
		for !c.IdPSessionRevoked(ended.Key()) {
			if time.Now().After(deadline) {
				t.Fatalf("the cache did not see the IdP session's end within 2s (%d copies of each event)", copies)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if c.IdPSessionRevoked(other.Key()) || c.IdPSessionRevoked(elsewhere.Key()) {
			t.Error("another IdP session, or the same sid at another IdP, is revoked too")
		}
		// A node started later loads it before it serves.
		late := NewCache(s, time.Second)
		t.Cleanup(func() { _ = late.Close() })
		if !late.Ready() || !late.IdPSessionRevoked(ended.Key()) {
			t.Error("a node started afterwards does not know the IdP session ended")
		}
		// Restore writes back what a mirror holds and the store lost.
		lost := newRevocations()
		lost.IdPSessions[other.Key()] = until.Unix()
		if err := s.Restore(ctx, lost); err != nil {
			t.Fatal(err)
		}
		if rv, _ := s.Revocations(ctx, now); rv.IdPSessions[other.Key()] != until.Unix() {
			t.Errorf("after Restore: %+v", rv.IdPSessions)
		}
		// Revoked until its end, and no longer.
		c.now = func() time.Time { return until.Add(time.Second) }
		c.refreshMirror()
		if c.IdPSessionRevoked(ended.Key()) {
			t.Error("an IdP session's end is still enforced after its sessions could have lasted")
		}
	})

	t.Run("one-time ids: exactly one first use", func(t *testing.T) {
		s := open(t)
		now := time.Now()
		for _, c := range []struct {
			id         string
			now, until time.Time
		}{{"", now, now.Add(time.Minute)}, {"jti", now, now}, {"jti", now, now.Add(-time.Second)}} {
			if ok, err := s.FirstUse(ctx, c.id, c.now, c.until); ok || !errors.Is(err, ErrInvalid) {
				t.Errorf("FirstUse(%q, until %s) = %v, %v", c.id, c.until.Sub(c.now), ok, err)
			}
		}
		id := "https://idp.example\x00jti-1"
		if ok, err := s.FirstUse(ctx, id, now, now.Add(time.Minute)); !ok || err != nil {
			t.Fatalf("the first use: %v %v", ok, err)
		}
		if ok, err := s.FirstUse(ctx, id, now.Add(time.Second), now.Add(time.Minute)); ok || err != nil {
			t.Errorf("a second use: %v %v", ok, err)
		}
		if ok, err := s.FirstUse(ctx, "https://other.example\x00jti-1", now, now.Add(time.Minute)); !ok || err != nil {
			t.Errorf("another id: %v %v", ok, err)
		}
		// Of concurrent uses (on any number of nodes), exactly one wins.
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if ok, err := s.FirstUse(ctx, "jti-raced", now, now.Add(time.Minute)); ok && err == nil {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Errorf("%d of 16 concurrent uses won", wins.Load())
		}
		// Long ids are fine: the store keys them by a hash.
		long := strings.Repeat("j", 4096)
		if ok, err := s.FirstUse(ctx, long, now, now.Add(time.Minute)); !ok || err != nil {
			t.Errorf("a long id: %v %v", ok, err)
		}
	})

	t.Run("events announce changes", func(t *testing.T) {
		s := open(t)
		waitSubscribed(t, s)
		if _, err := s.AddGrant(ctx, Grant{User: alice, Resource: "db", CreatedAt: t0.Unix(), ExpiresAt: t0.Add(time.Hour).Unix()}); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(2 * time.Second)
		for {
			select {
			case e := <-s.Events():
				if e.Kind == "user" && e.UserKey == alice.Key() {
					return
				}
			case <-deadline:
				t.Fatal("no event for the new grant within 2s")
			}
		}
	})

	t.Run("cache: hits, invalidation, the local revocation mirror", func(t *testing.T) {
		s := open(t)
		counting := &countingStore{Store: s}
		c := NewCache(counting, time.Second)
		t.Cleanup(func() { _ = c.Close() })
		now := time.Now()
		copies := waitSubscribed(t, s)
		c.mu.RLock()
		gen := c.gen
		c.mu.RUnlock()
		_, _ = s.AddGrant(ctx, Grant{User: alice, Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		// Its event (one copy per subscription) reaches the cache before
		// the first lookup, else it would invalidate what that caches.
		deadline := time.Now().Add(5 * time.Second)
		for {
			c.mu.RLock()
			applied := c.gen - gen
			c.mu.RUnlock()
			if applied >= uint64(copies) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the cache applied %d of %d copies of the grant's event within 5s", applied, copies)
			}
			time.Sleep(time.Millisecond)
		}
		st, err := c.Lookup(ctx, alice, "sid", now)
		if err != nil || len(st.Grants) != 1 {
			t.Fatalf("first lookup: %+v %v", st, err)
		}
		// Ten lookups within the TTL make no store call. A copy of an
		// earlier event (or a subscription's resync) may still arrive and
		// rightly invalidate the entry once: the cache must then cache
		// again, so up to five rounds, until one makes no store call.
		calls := int64(-1)
		for round := 0; round < 5 && calls != 0; round++ {
			before := counting.lookups.Load()
			for range 10 {
				_, _ = c.Lookup(ctx, alice, "sid", now.Add(100*time.Millisecond))
			}
			calls = counting.lookups.Load() - before
		}
		if calls != 0 {
			t.Errorf("store lookups within the cache TTL in each of 5 rounds of 10 (%d in the last)", calls)
		}
		// A change elsewhere reaches the cache through the store's events.
		g2, _ := s.AddGrant(ctx, Grant{User: alice, Resource: "wiki", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		deadline = time.Now().Add(2 * time.Second)
		for {
			st, _ = c.Lookup(ctx, alice, "sid", now.Add(200*time.Millisecond))
			if len(st.Grants) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the cache did not see a new grant within 2s of its event")
			}
			time.Sleep(10 * time.Millisecond)
		}
		_, _ = s.RevokeGrant(ctx, g2.ID, "ops", now)
		if err := s.RevokeSession(ctx, alice, "sid", now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		deadline = time.Now().Add(2 * time.Second)
		for {
			st, _ = c.Lookup(ctx, alice, "sid", now.Add(300*time.Millisecond))
			if st.SessionRevoked {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the cache did not see a session revocation within 2s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(st.Grants) != 1 {
			t.Errorf("after revoking one grant: %v", st.Grants)
		}
		// The expiry of a grant in the cache is noticed without the store.
		var expired []string
		c.OnExpired = func(g Grant) { expired = append(expired, g.Resource) }
		_, _ = c.Lookup(ctx, alice, "sid", now.Add(2*time.Hour))
		if len(expired) != 1 || expired[0] != "db" {
			t.Errorf("expired on use: %v", expired)
		}
		// Users who stop coming leave the cache at the next mirror refresh.
		// (A read that an event overtook is not cached: on a busy machine
		// the events of the writes above can still be arriving, so read
		// until the entry is there.)
		n := 0
		for range 100 {
			_, _ = c.Lookup(ctx, User{Iss: alice.Iss, Sub: "gone"}, "s2", time.Now())
			c.mu.RLock()
			n = len(c.entries)
			c.mu.RUnlock()
			if n > 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		c.now = func() time.Time { return now.Add(3 * time.Hour) } // past every lookup above
		c.refreshMirror()
		c.mu.RLock()
		left := len(c.entries)
		c.mu.RUnlock()
		if n == 0 || left != 0 {
			t.Errorf("entries before and after pruning: %d, %d", n, left)
		}
		// An expiry is reported once, even after mirror refreshes: the
		// store keeps returning the grant for a day.
		for range 3 {
			c.refreshMirror()
			_, _ = c.Lookup(ctx, alice, "sid", now.Add(3*time.Hour))
		}
		if len(expired) != 1 {
			t.Errorf("expired on use, reported %d times: %v", len(expired), expired)
		}
	})

	t.Run("revoked grants are listed for the mirrors, and Restore writes back", func(t *testing.T) {
		s := open(t)
		now := time.Now()
		g, _ := s.AddGrant(ctx, Grant{User: alice, Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		if _, err := s.RevokeGrant(ctx, g.ID, "ops", now); err != nil {
			t.Fatal(err)
		}
		rv, err := s.Revocations(ctx, now)
		if err != nil || rv.Grants[g.ID].UserKey != alice.Key() || rv.Grants[g.ID].Until != g.ExpiresAt {
			t.Fatalf("Revocations after revoking a grant: %+v %v", rv.Grants, err)
		}
		// What a node's mirror holds and this store never had.
		g2, _ := s.AddGrant(ctx, Grant{User: bob, Resource: "wiki", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		lost := newRevocations()
		lost.Sessions[bob.Key()+"/sid-lost"] = now.Add(time.Hour).Unix()
		lost.Users[alice.Key()] = now.Unix()
		lost.Grants[g2.ID] = GrantRevocation{UserKey: bob.Key(), Until: g2.ExpiresAt, At: now.Unix(), By: "ops"}
		lost.Grants["never-existed"] = GrantRevocation{UserKey: bob.Key(), Until: now.Add(time.Hour).Unix(), At: now.Unix()}
		if err := s.Restore(ctx, lost); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		st, _ := s.Lookup(ctx, bob, "sid-lost", now)
		if !st.SessionRevoked || len(st.Grants) != 0 {
			t.Errorf("bob after Restore: %+v", st)
		}
		if st, _ := s.Lookup(ctx, alice, "x", now); st.UserRevokedAt != now.Unix() {
			t.Errorf("alice after Restore: %+v", st)
		}
		rv, _ = s.Revocations(ctx, now)
		if _, ok := rv.Grants[g2.ID]; !ok || rv.Sessions[bob.Key()+"/sid-lost"] == 0 || rv.Users[alice.Key()] != now.Unix() {
			t.Errorf("Revocations after Restore: %+v", rv)
		}
		// Restore never undoes: an older user revocation leaves the newer.
		older := newRevocations()
		older.Users[alice.Key()] = now.Add(-time.Hour).Unix()
		if err := s.Restore(ctx, older); err != nil {
			t.Fatal(err)
		}
		if st, _ := s.Lookup(ctx, alice, "x", now); st.UserRevokedAt != now.Unix() {
			t.Errorf("an older revocation replaced a newer one: %+v", st)
		}
	})

	t.Run("cache: the mirror holds revocations the store lost, and writes them back", func(t *testing.T) {
		s := open(t)
		now := time.Now()
		g, _ := s.AddGrant(ctx, Grant{User: alice, Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		forgetful := &forgetfulStore{Store: s}
		c := NewCache(forgetful, time.Second)
		t.Cleanup(func() { _ = c.Close() })
		if _, err := s.RevokeGrant(ctx, g.ID, "ops", now); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeSession(ctx, alice, "sid", now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeUser(ctx, bob, now); err != nil {
			t.Fatal(err)
		}
		ended := IdPSession{Iss: alice.Iss, SID: "idp-sid-lost"}
		if err := s.RevokeIdPSession(ctx, ended, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		c.refreshMirror() // the revocations reach the mirror
		// Then the store forgets them (a failover to a replica that had
		// not received them).
		forgetful.forget(g)
		st, err := c.Lookup(ctx, alice, "sid", now.Add(time.Second))
		if err != nil || len(st.Grants) != 0 || !st.SessionRevoked {
			t.Errorf("alice, with the store's revocations lost: %+v %v", st, err)
		}
		if st, _ := c.Lookup(ctx, bob, "sid-b", now.Add(time.Second)); !st.Revoked(now.Unix()) {
			t.Errorf("bob, with the store's revocation lost: %+v", st)
		}
		if !c.IdPSessionRevoked(ended.Key()) {
			t.Error("an ended IdP session, with the store's revocation lost, is no longer revoked")
		}
		c.refreshMirror()
		r := forgetful.restored()
		if _, ok := r.Grants[g.ID]; !ok || r.Sessions[alice.Key()+"/sid"] == 0 || r.Users[bob.Key()] != now.Unix() ||
			r.IdPSessions[ended.Key()] != now.Add(time.Hour).Unix() {
			t.Errorf("written back: %+v", r)
		}
	})

	t.Run("cache: nothing is served before the mirror is loaded", func(t *testing.T) {
		s := open(t)
		down := &unreachableStore{Store: s}
		down.down.Store(true)
		c := NewCache(down, time.Second)
		t.Cleanup(func() { _ = c.Close() })
		if _, err := c.Lookup(ctx, alice, "sid", time.Now()); !errors.Is(err, ErrNotReady) || c.Ready() {
			t.Fatalf("a cache whose store was never reached: %v", err)
		}
		down.down.Store(false)
		deadline := time.Now().Add(5 * time.Second)
		for !c.Ready() {
			if time.Now().After(deadline) {
				t.Fatal("the mirror was not loaded within 5s of the store coming back")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := c.Lookup(ctx, alice, "sid", time.Now()); err != nil {
			t.Errorf("after loading: %v", err)
		}
	})

	t.Run("cache: a read that an event overtook is not cached", func(t *testing.T) {
		s := open(t)
		now := time.Now()
		g, _ := s.AddGrant(ctx, Grant{User: alice, Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		racing := &racingStore{Store: s}
		c := NewCache(racing, time.Second)
		t.Cleanup(func() { _ = c.Close() })
		// The user's grants change, and the change is announced, while the
		// cache's read (which saw the old state) is on its way back. (A
		// revocation would not do: the mirror of revoked grants filters it
		// whatever is cached.)
		racing.during = func() {
			_, _ = s.AddGrant(ctx, Grant{User: alice, Resource: "wiki", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
			c.Invalidate(alice)
		}
		if st, err := c.Lookup(ctx, alice, "sid", now); err != nil || len(st.Grants) != 1 || st.Grants[0].ID != g.ID {
			t.Fatalf("the racing read: %+v %v", st, err)
		}
		racing.during = nil
		if st, err := c.Lookup(ctx, alice, "sid", now.Add(100*time.Millisecond)); err != nil || len(st.Grants) != 2 {
			t.Errorf("the read the change overtook was served from the cache: %+v %v", st, err)
		}
	})
	cacheConformance(t, open)
}

// waitSubscribed waits until a remote store hears other nodes' events.
// waitSubscribed waits until a Redis store hears its events on every
// subscription it makes (one, or on a Cluster one per master: each hears
// every event) and returns how many copies of each event the store's
// cache will get.
func waitSubscribed(t *testing.T, s Store) int {
	t.Helper()
	rs, ok := s.(*RedisStore)
	if !ok {
		return 1
	}
	want := 1
	if rs.cluster != nil {
		var mu sync.Mutex
		masters := 0
		if err := rs.cluster.ForEachMaster(context.Background(), func(context.Context, *redis.Client) error {
			mu.Lock()
			masters++
			mu.Unlock()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want = masters
	}
	deadline := time.Now().Add(10 * time.Second)
	for int(rs.subscribed.Load()) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d subscriptions to the store's events within 10s", rs.subscribed.Load(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return want
}

// racingStore runs during after reading, before answering.
type racingStore struct {
	Store
	during func()
}

func (r *racingStore) Lookup(ctx context.Context, u User, sid string, now time.Time) (State, error) {
	st, err := r.Store.Lookup(ctx, u, sid, now)
	if r.during != nil {
		r.during()
	}
	return st, err
}

// forgetfulStore loses revocations, as a store that failed over to a
// lagging replica does: after forget, its lookups and listing show none,
// and it records what is written back.
type forgetfulStore struct {
	Store
	mu       sync.Mutex
	lost     bool
	grant    Grant
	restores []Revocations
}

func (f *forgetfulStore) forget(g Grant) {
	f.mu.Lock()
	f.lost, f.grant = true, g
	f.mu.Unlock()
}

func (f *forgetfulStore) Lookup(ctx context.Context, u User, sid string, now time.Time) (State, error) {
	st, err := f.Store.Lookup(ctx, u, sid, now)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lost {
		g := f.grant
		g.RevokedAt, g.RevokedBy = 0, ""
		if g.User == u {
			st.Grants = append(st.Grants, g)
		}
		st.SessionRevoked, st.UserRevokedAt = false, 0
	}
	return st, err
}

func (f *forgetfulStore) Revocations(ctx context.Context, now time.Time) (Revocations, error) {
	f.mu.Lock()
	lost := f.lost
	f.mu.Unlock()
	if lost {
		return newRevocations(), nil
	}
	return f.Store.Revocations(ctx, now)
}

func (f *forgetfulStore) Restore(ctx context.Context, rv Revocations) error {
	f.mu.Lock()
	f.restores = append(f.restores, rv)
	f.mu.Unlock()
	return f.Store.Restore(ctx, rv)
}

func (f *forgetfulStore) restored() Revocations {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := newRevocations()
	for _, r := range f.restores {
		maps.Copy(out.Sessions, r.Sessions)
		maps.Copy(out.Users, r.Users)
		maps.Copy(out.Grants, r.Grants)
		maps.Copy(out.IdPSessions, r.IdPSessions)
	}
	return out
}

// unreachableStore fails every read while down.
type unreachableStore struct {
	Store
	down atomic.Bool
}

func (u *unreachableStore) Revocations(ctx context.Context, now time.Time) (Revocations, error) {
	if u.down.Load() {
		return Revocations{}, ErrUnavailable
	}
	return u.Store.Revocations(ctx, now)
}

func (u *unreachableStore) Lookup(ctx context.Context, us User, sid string, now time.Time) (State, error) {
	if u.down.Load() {
		return State{}, ErrUnavailable
	}
	return u.Store.Lookup(ctx, us, sid, now)
}

type countingStore struct {
	Store
	lookups atomic.Int64
}

func (c *countingStore) Lookup(ctx context.Context, u User, sid string, now time.Time) (State, error) {
	c.lookups.Add(1)
	return c.Store.Lookup(ctx, u, sid, now)
}

func TestMemoryStore(t *testing.T) {
	conformance(t, func(t *testing.T) Store {
		s := NewMemory()
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestBoltStore(t *testing.T) {
	conformance(t, func(t *testing.T) Store {
		s, err := OpenBolt(filepath.Join(t.TempDir(), "grants.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// redisConformance runs the suite on one topology, emptied before each
// part.
func redisConformance(t *testing.T, url string, flush func()) {
	conformance(t, func(t *testing.T) Store {
		flush()
		s, err := OpenRedis(url, RedisOptions{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestRedisStore(t *testing.T) {
	// As production should run it: append-only, and Gatehouse logged in
	// as a user that may run only the commands it uses (docs/redis.md).
	r := redistest.Start(t, redistest.Options{AppendOnly: true, ACL: true})
	redisConformance(t, r.URL(), r.Flush)
	r.CheckACLLog(t)
}

func TestRedisClusterStoreWithACL(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0, redistest.Options{AppendOnly: true, ACL: true})
	redisConformance(t, c.URL(), c.Flush)
	for _, n := range c.Nodes {
		n.CheckACLLog(t)
	}
}

func TestRedisSentinelStore(t *testing.T) {
	set := redistest.StartSentinel(t, redistest.Options{AppendOnly: true})
	redisConformance(t, set.URL(), set.Flush)
}

func TestRedisClusterStore(t *testing.T) {
	c := redistest.StartCluster(t, 3, 1, redistest.Options{AppendOnly: true})
	redisConformance(t, c.URL(), c.Flush)
}

func TestBoltDurableAndLocked(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "grants.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := s.AddGrant(ctx, Grant{User: alice, Resource: "db", CreatedAt: t0.Unix(), ExpiresAt: t0.Add(time.Hour).Unix()})
	_ = s.RevokeSession(ctx, alice, "sid", time.Now().Add(time.Hour))
	start := time.Now()
	if _, err := OpenBolt(path); !errors.Is(err, ErrStoreLocked) || time.Since(start) > 3*time.Second {
		t.Errorf("a second open while locked: %v after %s", err, time.Since(start))
	}
	_ = s.Close()
	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, _ := s.Lookup(ctx, alice, "sid", t0)
	if len(st.Grants) != 1 || st.Grants[0].ID != g.ID || !st.SessionRevoked {
		t.Errorf("after a restart: %+v", st)
	}
}

func TestRedisRestartAndOutage(t *testing.T) {
	ctx := context.Background()
	r := redistest.Start(t, redistest.Options{AppendOnly: true, ACL: true})
	s, err := OpenRedis(r.URL(), RedisOptions{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, err := s.AppendOnly(ctx); err != nil || !ok {
		t.Errorf("AppendOnly: %v %v", ok, err)
	}
	now := time.Now()
	if _, err := s.AddGrant(ctx, Grant{User: alice, Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	c := NewCache(s, 50*time.Millisecond)
	defer c.Close()
	_ = s.RevokeSession(ctx, alice, "dead", now.Add(time.Hour))
	c.refreshMirror() // the revocation is in this node's mirror before Redis stops

	r.Stop()
	// Down: every lookup fails fast, and revocations still hold.
	var worst time.Duration
	for i := range 20 {
		start := time.Now()
		st, err := c.Lookup(ctx, alice, "dead", now.Add(time.Duration(i+2)*time.Second))
		if d := time.Since(start); d > worst {
			worst = d
		}
		if !errors.Is(err, ErrUnavailable) || len(st.Grants) != 0 || !st.SessionRevoked {
			t.Fatalf("lookup while down: %+v %v", st, err)
		}
	}
	if worst > 500*time.Millisecond {
		t.Errorf("a lookup took %s while Redis was down (bound 50ms)", worst)
	}
	t.Logf("slowest lookup while Redis was down: %s (grants_timeout 50ms)", worst.Round(time.Millisecond))

	r.Start()
	// Back: picked up without reopening, data kept (appendonly yes).
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Lookup(ctx, alice, "other", time.Now().Add(time.Hour-time.Minute))
		if err == nil && len(st.Grants) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis back, but lookups still fail: %+v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, _ := s.Lookup(ctx, alice, "dead", now); !st.SessionRevoked {
		t.Error("a session revocation was lost in the restart")
	}
}

// TestFirstUseEndsWithItsRecord: the embedded stores judge a one-time
// id's record by the caller's clock, so an id may be used again once its
// record has ended (Redis lets the key expire by itself).
func TestFirstUseEndsWithItsRecord(t *testing.T) {
	ctx := context.Background()
	s := NewMemory()
	defer s.Close()
	for _, c := range []struct {
		now  time.Time
		want bool
	}{{t0, true}, {t0.Add(59 * time.Second), false}, {t0.Add(time.Minute), true}} {
		if ok, err := s.FirstUse(ctx, "jti", c.now, c.now.Add(time.Minute)); ok != c.want || err != nil {
			t.Errorf("FirstUse at +%s: %v %v, want %v", c.now.Sub(t0), ok, err, c.want)
		}
	}
}
