package grants

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestPurgeForgetsWhatIsPast: the embedded stores' purge removes, bucket
// by bucket, what is past its retention at the time given, and nothing
// else.
func TestPurgeForgetsWhatIsPast(t *testing.T) {
	ctx := context.Background()
	const day = 24 * time.Hour
	now := t0.Add(40 * day)
	for name, open := range map[string]func(t *testing.T) *kvStore{
		"memory": func(*testing.T) *kvStore { return NewMemory().(*kvStore) },
		"bbolt": func(t *testing.T) *kvStore {
			s, err := OpenBolt(filepath.Join(t.TempDir(), "grants.db"))
			if err != nil {
				t.Fatal(err)
			}
			return s.(*kvStore)
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			old, err := s.AddGrant(ctx, Grant{User: bob, Resource: "db", CreatedAt: t0.Unix(), ExpiresAt: t0.Add(time.Hour).Unix()})
			must(err)
			live, err := s.AddGrant(ctx, Grant{User: alice, Resource: "db", CreatedAt: t0.Unix(), ExpiresAt: t0.Add(20 * day).Unix()})
			must(err)
			stale, err := s.CreateRequest(ctx, Request{App: "a", Resource: "db", User: bob, Duration: 60, MaxDuration: 60, CreatedAt: t0.Unix()})
			must(err)
			decided, err := s.CreateRequest(ctx, Request{App: "a", Resource: "db", User: bob, Duration: 60, MaxDuration: 60, CreatedAt: t0.Unix()})
			must(err)
			_, _, err = s.Decide(ctx, decided.ID, Decision{By: "carol", Now: t0.Add(20 * day)})
			must(err)
			must(s.RevokeUser(ctx, bob, t0))
			must(s.RevokeUser(ctx, alice, t0.Add(20*day)))
			must(s.RevokeSession(ctx, alice, "ended", t0.Add(time.Hour)))
			must(s.RevokeSession(ctx, alice, "running", now.Add(time.Hour)))
			ended, running := IdPSession{Iss: alice.Iss, SID: "ended"}, IdPSession{Iss: alice.Iss, SID: "running"}
			must(s.RevokeIdPSession(ctx, ended, t0.Add(time.Hour)))
			must(s.RevokeIdPSession(ctx, running, now.Add(time.Hour)))
			_, err = s.FirstUse(ctx, "jti", t0, t0.Add(time.Minute))
			must(err)
			c := Campaign{ID: "c1", App: "a", Review: "q", Scope: ScopeAll, OnTimeout: ActionKeep, PeriodStart: t0.Add(-day).Unix(), PeriodEnd: t0.Unix(),
				OpenedAt: t0.Unix(), EndsAt: t0.Add(day).Unix(), Items: []ReviewItem{{ID: "i1", User: alice, Resource: "db", Source: ViaStanding}}}
			_, _, err = s.OpenReview(ctx, c)
			must(err)
			_, err = s.DecideReviewItem(ctx, "c1", "i1", ItemDecision{Action: ActionKeep, By: "carol", At: t0.Unix()})
			must(err)

			must(s.purge(now))
			if _, err := s.RevokeGrant(ctx, old.ID, "ops", now); !errors.Is(err, ErrNotFound) {
				t.Errorf("a grant that ended 40 days ago: %v, want ErrNotFound", err)
			}
			if gs, _ := s.Grants(ctx, GrantFilter{All: true}); len(gs) != 1 || gs[0].ID != live.ID {
				t.Errorf("grants after the purge: %+v, want the one that ended 20 days ago", gs)
			}
			if _, err := s.Request(ctx, stale.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("a request pending for 40 days: %v, want ErrNotFound", err)
			}
			if _, err := s.Request(ctx, decided.ID); err != nil {
				t.Errorf("a request decided 20 days ago: %v", err)
			}
			if st, _ := s.Lookup(ctx, bob, "", now); st.UserRevokedAt != 0 {
				t.Errorf("bob's revocation of 40 days ago is kept: %d", st.UserRevokedAt)
			}
			if st, _ := s.Lookup(ctx, alice, "running", now); st.UserRevokedAt == 0 || !st.SessionRevoked {
				t.Errorf("alice's revocations in force were purged: %+v", st)
			}
			if st, _ := s.Lookup(ctx, alice, "ended", now); st.SessionRevoked {
				t.Error("a session revocation past its end is kept")
			}
			if rv, _ := s.Revocations(ctx, t0); len(rv.IdPSessions) != 1 || rv.IdPSessions[running.Key()] == 0 {
				t.Errorf("IdP sessions after the purge: %v", rv.IdPSessions)
			}
			if first, _ := s.FirstUse(ctx, "jti", t0, t0.Add(time.Minute)); !first {
				t.Error("a one-time id's record past its end is kept")
			}
			if _, err := s.Review(ctx, "c1"); err != nil {
				t.Errorf("a campaign that ended 39 days ago: %v", err)
			}
			must(s.purge(t0.Add(2*day + ReviewRetention)))
			if _, err := s.Review(ctx, "c1"); !errors.Is(err, ErrNotFound) {
				t.Errorf("a campaign past ReviewRetention: %v, want ErrNotFound", err)
			}
			n := 0
			must(s.db.view(func(tx kvTx) error {
				return tx.scan(bReviewDecisions, "", func(string, []byte) error { n++; return nil })
			}))
			if n != 0 {
				t.Errorf("%d decisions of a purged campaign are kept", n)
			}
		})
	}
}
