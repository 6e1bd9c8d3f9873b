package grants

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// scimConformance is the part of the conformance suite about SCIM users:
// every store keeps them alike.
func scimConformance(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	ids := func(us []SCIMUser) []string {
		var out []string
		for _, u := range us {
			out = append(out, u.ID)
		}
		return out
	}
	find := func(t *testing.T, s Store, f SCIMFilter, want ...string) {
		t.Helper()
		us, err := s.SCIMUsers(ctx, f)
		if err != nil {
			t.Fatalf("SCIMUsers(%+v): %v", f, err)
		}
		if got := strings.Join(ids(us), " "); got != strings.Join(want, " ") {
			t.Errorf("SCIMUsers(%+v) = %q, want %q", f, got, strings.Join(want, " "))
		}
	}

	t.Run("created, read, found by userName, externalId and link email", func(t *testing.T) {
		s := open(t)
		a, err := s.PutSCIMUser(ctx, SCIMUser{UserName: "Alice@Example.com", ExternalID: "alice", Active: true,
			Emails: []SCIMEmail{{Value: "a.smith@example.org", Type: "work", Primary: true}, {Value: "alice@home.example"}}}, t0)
		if err != nil {
			t.Fatal(err)
		}
		if a.ID == "" || a.Created != t0.Unix() || a.Modified != t0.Unix() || a.Version != 1 || !a.Active {
			t.Errorf("created: %+v", a)
		}
		b, err := s.PutSCIMUser(ctx, SCIMUser{UserName: "bob", ExternalID: "Alice", Emails: []SCIMEmail{{Value: "BOB@example.com"}}}, t0.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if b.ID == a.ID || b.Active {
			t.Errorf("bob: %+v", b)
		}
		got, err := s.SCIMUser(ctx, a.ID)
		if err != nil || got.UserName != "Alice@Example.com" || len(got.Emails) != 2 || got.PrimaryEmail() != "a.smith@example.org" {
			t.Errorf("SCIMUser: %+v %v", got, err)
		}
		if _, err := s.SCIMUser(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
			t.Errorf("an unknown id: %v", err)
		}
		find(t, s, SCIMFilter{}, a.ID, b.ID)
		find(t, s, SCIMFilter{UserName: "alice@example.COM"}, a.ID)
		find(t, s, SCIMFilter{UserName: "alice"})
		find(t, s, SCIMFilter{ExternalID: "alice"}, a.ID) // exact: bob's is "Alice"
		find(t, s, SCIMFilter{ExternalID: "Alice"}, b.ID)
		find(t, s, SCIMFilter{ExternalID: "alic"})
		// The link emails: the userName and the primary email (or the
		// only one), never another.
		find(t, s, SCIMFilter{Email: "ALICE@example.com"}, a.ID)
		find(t, s, SCIMFilter{Email: "a.smith@EXAMPLE.org"}, a.ID)
		find(t, s, SCIMFilter{Email: "alice@home.example"})
		find(t, s, SCIMFilter{Email: "bob@example.com"}, b.ID)
		find(t, s, SCIMFilter{Email: "bob"}, b.ID)
		find(t, s, SCIMFilter{Email: "alice@example.com", ExternalID: "Alice"})
		find(t, s, SCIMFilter{Email: "alice@example.com\x00" + a.ID})
	})

	t.Run("what a provisioning system may not set", func(t *testing.T) {
		s := open(t)
		long := strings.Repeat("é", MaxSCIMString+1)
		for name, u := range map[string]SCIMUser{
			"no userName":            {ExternalID: "x"},
			"a NUL in the userName":  {UserName: "a\x00b"},
			"a newline":              {UserName: "a\nb"},
			"a long userName":        {UserName: long},
			"a long externalId":      {UserName: "a", ExternalID: long},
			"invalid UTF-8":          {UserName: "a\xff"},
			"an email without value": {UserName: "a", Emails: []SCIMEmail{{Type: "work"}}},
			"two primary emails":     {UserName: "a", Emails: []SCIMEmail{{Value: "a@x", Primary: true}, {Value: "b@x", Primary: true}}},
			"too many emails":        {UserName: "a", Emails: make([]SCIMEmail, MaxSCIMEmails+1)},
		} {
			if _, err := s.PutSCIMUser(ctx, u, t0); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if _, err := s.PutSCIMUser(ctx, SCIMUser{UserName: strings.Repeat("é", MaxSCIMString)}, t0); err != nil {
			t.Errorf("a userName of %d characters: %v", MaxSCIMString, err)
		}
		find(t, s, SCIMFilter{UserName: "a"})
	})

	t.Run("replaced: version, times, a new userName, stale index entries", func(t *testing.T) {
		s := open(t)
		a, _ := s.PutSCIMUser(ctx, SCIMUser{UserName: "alice", ExternalID: "x1", Active: true, Emails: []SCIMEmail{{Value: "alice@example.com"}}}, t0)
		c, _ := s.PutSCIMUser(ctx, SCIMUser{UserName: "carol", Active: true}, t0.Add(time.Second))
		r, err := s.PutSCIMUser(ctx, SCIMUser{ID: a.ID, UserName: "alice2", ExternalID: "x2", Created: 1, Version: 99, Deleted: 5,
			Emails: []SCIMEmail{{Value: "alice2@example.com"}}}, t0.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if r.Version != 2 || r.Created != t0.Unix() || r.Modified != t0.Add(time.Minute).Unix() || r.Active || r.Deleted != 0 {
			t.Errorf("replaced: %+v", r)
		}
		find(t, s, SCIMFilter{UserName: "alice"})
		find(t, s, SCIMFilter{ExternalID: "x1"})
		find(t, s, SCIMFilter{Email: "alice@example.com"})
		find(t, s, SCIMFilter{UserName: "ALICE2"}, a.ID)
		find(t, s, SCIMFilter{ExternalID: "x2"}, a.ID)
		find(t, s, SCIMFilter{Email: "alice2@example.com"}, a.ID)
		// The old userName is free; another user's is not.
		if _, err := s.PutSCIMUser(ctx, SCIMUser{ID: a.ID, UserName: "Carol"}, t0.Add(2*time.Minute)); !errors.Is(err, ErrConflict) {
			t.Errorf("renamed to another's userName: %v", err)
		}
		if got, _ := s.SCIMUser(ctx, a.ID); got.UserName != "alice2" || got.Version != 2 {
			t.Errorf("a refused replacement changed the user: %+v", got)
		}
		find(t, s, SCIMFilter{UserName: "carol"}, c.ID)
		n, err := s.PutSCIMUser(ctx, SCIMUser{UserName: "alice"}, t0.Add(3*time.Minute))
		if err != nil {
			t.Fatalf("the old userName, taken by a new user: %v", err)
		}
		find(t, s, SCIMFilter{UserName: "alice"}, n.ID)
		// Same userName, other case: its own.
		if r, err := s.PutSCIMUser(ctx, SCIMUser{ID: c.ID, UserName: "CAROL", Active: true}, t0.Add(4*time.Minute)); err != nil || r.Version != 2 {
			t.Errorf("a user keeping its userName: %+v %v", r, err)
		}
		if _, err := s.PutSCIMUser(ctx, SCIMUser{ID: "nobody", UserName: "x"}, t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("replacing an unknown user: %v", err)
		}
		if _, err := s.PutSCIMUser(ctx, SCIMUser{UserName: "Alice2"}, t0); !errors.Is(err, ErrConflict) {
			t.Errorf("a second user with a userName: %v", err)
		}
		find(t, s, SCIMFilter{}, a.ID, c.ID, n.ID)
	})

	t.Run("deleted: still found for sign-ins, its userName free for a new user", func(t *testing.T) {
		s := open(t)
		a, _ := s.PutSCIMUser(ctx, SCIMUser{UserName: "alice@example.com", ExternalID: "alice", Active: true}, t0)
		d, err := s.DeleteSCIMUser(ctx, a.ID, t0.Add(time.Hour))
		if err != nil || d.Deleted != t0.Add(time.Hour).Unix() || d.Active || d.Version != 2 || d.Modified != d.Deleted {
			t.Fatalf("DeleteSCIMUser: %+v %v", d, err)
		}
		if got, err := s.SCIMUser(ctx, a.ID); err != nil || got.Deleted == 0 || got.Active {
			t.Errorf("a deleted user, read: %+v %v", got, err)
		}
		find(t, s, SCIMFilter{Email: "alice@example.com"}, a.ID)
		find(t, s, SCIMFilter{ExternalID: "alice"}, a.ID)
		if _, err := s.DeleteSCIMUser(ctx, a.ID, t0.Add(2*time.Hour)); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted twice: %v", err)
		}
		if _, err := s.DeleteSCIMUser(ctx, "nobody", t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleting an unknown user: %v", err)
		}
		if _, err := s.PutSCIMUser(ctx, SCIMUser{ID: a.ID, UserName: "alice@example.com", Active: true}, t0.Add(2*time.Hour)); !errors.Is(err, ErrNotFound) {
			t.Errorf("replacing a deleted user: %v", err)
		}
		// A new user with the userName (a rehire) replaces it.
		n, err := s.PutSCIMUser(ctx, SCIMUser{UserName: "Alice@example.com", Active: true}, t0.Add(3*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.SCIMUser(ctx, a.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("the deleted user after a new one took its userName: %v", err)
		}
		find(t, s, SCIMFilter{Email: "alice@example.com"}, n.ID)
		find(t, s, SCIMFilter{ExternalID: "alice"})
		find(t, s, SCIMFilter{}, n.ID)
	})

	t.Run("concurrent creations of one userName: exactly one", func(t *testing.T) {
		s := open(t)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				_, errs[i] = s.PutSCIMUser(ctx, SCIMUser{UserName: "Dave", ExternalID: fmt.Sprint(i)}, t0)
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrConflict):
				t.Errorf("a creation: %v", err)
			}
		}
		if won != 1 {
			t.Errorf("%d creations succeeded", won)
		}
		if us, err := s.SCIMUsers(ctx, SCIMFilter{UserName: "dave"}); err != nil || len(us) != 1 {
			t.Errorf("users named dave afterwards: %+v %v", us, err)
		}
		if us, err := s.SCIMUsers(ctx, SCIMFilter{}); err != nil || len(us) != 1 {
			t.Errorf("users afterwards: %d %v", len(us), err)
		}
	})
}
