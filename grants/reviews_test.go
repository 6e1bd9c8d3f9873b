package grants

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCampaign is a campaign of the payroll app's quarterly review for
// the period before t0, with an item for bob's grant and one for
// alice's standing access.
func testCampaign(id string) Campaign {
	items := []ReviewItem{
		{User: bob, Email: "bob@example.com", Resource: "payroll-reports", Source: ViaGrant, GrantID: "g1", ApprovedBy: "carol@example.com"},
		{User: alice, Email: "alice@example.com", Resource: "/payslips", Source: ViaStanding, LastUsed: t0.Unix() - 3600, Count: 12},
	}
	for i := range items {
		items[i].ID = ReviewItemID(items[i].User, items[i].Resource, items[i].Source, items[i].GrantID)
	}
	return Campaign{ID: id, App: "payroll", Review: "quarterly", Scope: ScopeAll, OnTimeout: ActionFlag, Reviewers: []string{"managers"},
		PeriodStart: t0.Add(-90 * 24 * time.Hour).Unix(), PeriodEnd: t0.Unix(), OpenedAt: t0.Unix(), EndsAt: t0.Add(14 * 24 * time.Hour).Unix(),
		OpenedBy: "schedule", Items: items}
}

// reviewConformance is the part of the conformance suite about access
// reviews: campaigns opened once, items decided once, resource
// revocations kept and mirrored.
func reviewConformance(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	t.Run("reviews: opened once, decided once", func(t *testing.T) {
		s := open(t)
		for _, mutate := range []func(*Campaign){
			func(c *Campaign) { c.ID = "" }, func(c *Campaign) { c.ID = "a{b}" }, func(c *Campaign) { c.Scope = "some" },
			func(c *Campaign) { c.OnTimeout = "ignore" }, func(c *Campaign) { c.EndsAt = c.OpenedAt },
			func(c *Campaign) { c.PeriodEnd = c.PeriodStart }, func(c *Campaign) { c.Items[1].ID = c.Items[0].ID },
			func(c *Campaign) { c.Items[0].Source = "magic" }, func(c *Campaign) { c.App = "" },
		} {
			c := testCampaign("bad")
			mutate(&c)
			if _, _, err := s.OpenReview(ctx, c); !errors.Is(err, ErrInvalid) {
				t.Errorf("OpenReview(%+v): %v, want ErrInvalid", c, err)
			}
		}
		id := CampaignID("payroll", "quarterly", t0.Unix())
		if id != CampaignID("payroll", "quarterly", t0.Unix()) || id == CampaignID("payroll", "quarterly", t0.Unix()+1) ||
			id == CampaignID("legacy", "quarterly", t0.Unix()) {
			t.Fatal("CampaignID is not one id per app, review and period")
		}
		c := testCampaign(id)
		got, opened, err := s.OpenReview(ctx, c)
		if err != nil || !opened || len(got.Items) != 2 {
			t.Fatalf("OpenReview: %+v %v %v", got, opened, err)
		}
		// Another node opening the same period gets the first campaign.
		again := testCampaign(id)
		again.Items = again.Items[:1]
		again.OpenedBy = "node 2"
		got, opened, err = s.OpenReview(ctx, again)
		if err != nil || opened || len(got.Items) != 2 || got.OpenedBy != "schedule" {
			t.Errorf("OpenReview again: %+v %v %v", got, opened, err)
		}
		// Of concurrent openings, exactly one opens.
		var wg sync.WaitGroup
		var won atomic.Int32
		for range 8 {
			wg.Go(func() {
				_, ok, err := s.OpenReview(ctx, testCampaign("race"))
				if err != nil {
					t.Error(err)
				}
				if ok {
					won.Add(1)
				}
			})
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Errorf("%d concurrent openings opened, want 1", won.Load())
		}
		other := testCampaign("other-app")
		other.App = "legacy"
		if _, _, err := s.OpenReview(ctx, other); err != nil {
			t.Fatal(err)
		}
		cs, err := s.Reviews(ctx, "payroll", time.Time{})
		if err != nil || len(cs) != 2 {
			t.Fatalf("Reviews: %d %v", len(cs), err)
		}
		if cs, err := s.Reviews(ctx, "payroll", t0.Add(time.Second)); err != nil || len(cs) != 0 {
			t.Errorf("Reviews opened since after both: %d %v", len(cs), err)
		}
		if cs, err := s.Reviews(ctx, "payroll", t0); err != nil || len(cs) != 2 {
			t.Errorf("Reviews opened since their opening: %d %v", len(cs), err)
		}
		if _, err := s.Review(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Review(unknown): %v", err)
		}

		bobItem, aliceItem := c.Items[0].ID, c.Items[1].ID
		keep := ItemDecision{Action: ActionKeep, By: "carol@example.com", At: t0.Unix() + 60, Reason: "still on the project"}
		for _, bad := range []struct {
			campaign, item string
			d              ItemDecision
			want           error
		}{
			{id, "nope", keep, ErrNotFound}, {"nope", bobItem, keep, ErrNotFound},
			{id, bobItem, ItemDecision{Action: "maybe", By: "carol", At: 1}, ErrInvalid}, {id, bobItem, ItemDecision{Action: ActionKeep, At: 1}, ErrInvalid},
		} {
			if _, err := s.DecideReviewItem(ctx, bad.campaign, bad.item, bad.d); !errors.Is(err, bad.want) {
				t.Errorf("DecideReviewItem(%s, %s, %+v): %v, want %v", bad.campaign, bad.item, bad.d, err, bad.want)
			}
		}
		it, err := s.DecideReviewItem(ctx, id, bobItem, keep)
		if err != nil || it.Decision == nil || it.Decision.Action != ActionKeep || it.Resource != "payroll-reports" {
			t.Fatalf("DecideReviewItem: %+v %v", it, err)
		}
		if _, err := s.DecideReviewItem(ctx, id, bobItem, ItemDecision{Action: ActionRevoke, By: "dave", At: t0.Unix() + 61}); !errors.Is(err, ErrAlreadyDecided) {
			t.Errorf("deciding twice: %v", err)
		}
		// Of concurrent deciders, exactly one decides.
		won.Store(0)
		for i := range 8 {
			wg.Go(func() {
				_, err := s.DecideReviewItem(ctx, id, aliceItem, ItemDecision{Action: ActionRevoke, By: "reviewer", At: t0.Unix() + int64(i) + 1})
				switch {
				case err == nil:
					won.Add(1)
				case !errors.Is(err, ErrAlreadyDecided):
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Errorf("%d concurrent decisions won, want 1", won.Load())
		}
		if err := s.ReviewItemApplied(ctx, id, aliceItem); err != nil {
			t.Fatal(err)
		}
		if err := s.ReviewItemApplied(ctx, id, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("applied, an undecided or unknown item: %v", err)
		}
		got, err = s.Review(ctx, id)
		if err != nil || got.Undecided() != 0 || got.Item(bobItem).Decision.Reason != "still on the project" ||
			!got.Item(aliceItem).Decision.Applied || got.Item(bobItem).Decision.Applied || got.Item(aliceItem).Decision.Action != ActionRevoke {
			t.Errorf("the campaign read back: %+v %v", got, err)
		}
		if cs, _ := s.Reviews(ctx, "payroll", time.Time{}); len(cs) != 2 || cs[0].ID != id || cs[0].Undecided() != 0 || cs[1].Undecided() != 2 {
			t.Errorf("Reviews with decisions: %+v", cs)
		}
	})

	t.Run("reviews: resource revocations, mirrored", func(t *testing.T) {
		s := open(t)
		c := NewCache(s, time.Second)
		t.Cleanup(func() { _ = c.Close() })
		if !c.Ready() {
			t.Fatal("the cache did not load its mirror")
		}
		waitSubscribed(t, s)
		for _, bad := range []ResourceRevocation{{App: "payroll", Resource: "x", At: 1}, {User: alice, Resource: "x", At: 1},
			{User: alice, App: "payroll", Resource: "a|b", At: 1}, {User: alice, App: "payroll", Resource: "x"}} {
			if err := s.RevokeResource(ctx, bad); !errors.Is(err, ErrInvalid) {
				t.Errorf("RevokeResource(%+v): %v, want ErrInvalid", bad, err)
			}
		}
		rr := ResourceRevocation{User: alice, Email: "alice@example.com", App: "payroll", Resource: "/payslips", At: t0.Unix(), By: "carol", Reason: "left the team", Campaign: "c1"}
		if err := s.RevokeResource(ctx, rr); err != nil {
			t.Fatal(err)
		}
		rr.Reason = "left the team (again)"
		if err := s.RevokeResource(ctx, rr); err != nil { // replaces
			t.Fatal(err)
		}
		if err := s.RevokeResource(ctx, ResourceRevocation{User: alice, App: "legacy", Resource: "legacy-app", At: t0.Unix()}); err != nil {
			t.Fatal(err)
		}
		all, err := s.ResourceRevocations(ctx)
		if err != nil || len(all) != 2 || all[0].User != alice {
			t.Fatalf("ResourceRevocations: %+v %v", all, err)
		}
		// Every node's mirror has them (this cache heard the store's
		// event, as another node's would).
		waitMirror(t, c, alice, 2)
		for _, r := range c.RevokedResources(alice) {
			if r.App == "payroll" && r.Reason != "left the team (again)" {
				t.Errorf("the mirror: %+v", r)
			}
		}
		if got := c.RevokedResources(bob); len(got) != 0 {
			t.Errorf("bob's: %+v", got)
		}
		lifted, err := s.LiftResourceRevocation(ctx, alice, "payroll", "/payslips")
		if err != nil || lifted.By != "carol" {
			t.Fatalf("LiftResourceRevocation: %+v %v", lifted, err)
		}
		if _, err := s.LiftResourceRevocation(ctx, alice, "payroll", "/payslips"); !errors.Is(err, ErrNotFound) {
			t.Errorf("lifting twice: %v", err)
		}
		waitMirror(t, c, alice, 1)
		// What this node does itself holds at once.
		c.NoteResourceRevoked(ResourceRevocation{User: bob, App: "payroll", Resource: "payroll-reports", At: t0.Unix()})
		if got := c.RevokedResources(bob); len(got) != 1 {
			t.Errorf("noted: %+v", got)
		}
		c.NoteResourceLifted(bob, "payroll", "payroll-reports")
		if got := c.RevokedResources(bob); len(got) != 0 {
			t.Errorf("lifted: %+v", got)
		}
	})
}

// waitMirror waits until the cache's mirror holds n resource
// revocations of u: another node's change arrives as an event.
func waitMirror(t *testing.T, c *Cache, u User, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(c.RevokedResources(u)) != n {
		if time.Now().After(deadline) {
			t.Fatalf("the mirror holds %d resource revocations of %s after 5 s, want %d", len(c.RevokedResources(u)), u, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
