package gate

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// quarterly is the payroll app's review in these tests.
var quarterly = ReviewConfig{Name: "quarterly", Every: 90 * 24 * time.Hour, Reviewers: []string{"managers"},
	Scope: grants.ScopeAll, OnTimeout: grants.ActionRevoke, Duration: 14 * 24 * time.Hour}

// wednesday10 is Wednesday 2026-11-25, 10:00 in Berlin: contractors
// work then.
var wednesday10 = time.Unix(1795597200, 0)

// reviewGate is the payroll site with the policy library and the
// quarterly review, its clock at wednesday10; it records the schedule's
// events and the open-items metric.
type reviewGate struct {
	*testGate
	mu     sync.Mutex
	events []Event
	open   map[string]int
}

func newReviewGate(t *testing.T, store grants.Store, change func(*Config)) *reviewGate {
	t.Helper()
	rg := &reviewGate{open: map[string]int{}}
	rg.testGate = libraryGate(t, func(c *Config) {
		c.Reviews = []ReviewConfig{quarterly}
		c.OnEvent = func(e Event) {
			rg.mu.Lock()
			rg.events = append(rg.events, e)
			rg.mu.Unlock()
		}
		c.OnReviewItems = func(review string, n int) {
			rg.mu.Lock()
			rg.open[review] = n
			rg.mu.Unlock()
		}
		if store != nil {
			cache := grants.NewCache(store, 50*time.Millisecond)
			t.Cleanup(func() { _ = cache.Close() })
			c.Grants = cache
		}
		if change != nil {
			change(c)
		}
	})
	if store != nil {
		rg.store = store
	}
	rg.clock.t = wednesday10
	return rg
}

// person is a session of sub in groups, made a minute ago.
func (tg *testGate) person(sub string, groups ...string) *authn.Session {
	now := tg.clock.now()
	return &authn.Session{ID: "sid-" + sub, Subject: sub, Issuer: tg.idp.URL, Email: sub + "@example.com", Groups: groups,
		Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
}

func (rg *reviewGate) eventsNamed(msg string) []Event {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	var out []Event
	for _, e := range rg.events {
		if e.Msg == msg {
			out = append(out, e)
		}
	}
	return out
}

// field is an event's string field.
func field(e Event, key string) string {
	for _, f := range e.Fields {
		if f.Key == key {
			return f.String
		}
	}
	return ""
}

// TestAccessReview: a campaign opens once per period whatever the nodes,
// lists standing access (from usage) and grants with their usage;
// reviewers keep and revoke (a revoked grant ends at once, revoked
// standing access is denied by the policy until a newer grant); hostile
// forms are refused; on_timeout settles what nobody decided.
func TestAccessReview(t *testing.T) {
	ctx := context.Background()
	store := grants.NewMemory()
	t.Cleanup(func() { _ = store.Close() })
	rg := newReviewGate(t, store, nil)
	node2 := newReviewGate(t, store, nil) // another node on the same store
	iss := rg.idp.URL
	user := func(sub string) grants.User { return grants.User{Iss: iss, Sub: sub} }
	start := quarterly.PeriodStart(wednesday10)
	prev := start.Add(-45 * 24 * time.Hour) // within the period reviewed
	if err := store.AddUsage(ctx, []grants.Usage{
		{App: "payroll", User: user("alice"), Email: "alice@example.com", Resource: "/payslips", Via: grants.ViaStanding, Count: 12, Last: prev.Unix()},
		{App: "payroll", User: user("dave"), Email: "dave@example.com", Resource: "payroll-reports", Via: grants.ViaStanding, Count: 3, Last: prev.Unix()},
		{App: "payroll", User: user("carol"), Email: "carol@example.com", Resource: "payroll-reports", Via: grants.ViaStanding, Count: 9, Last: prev.Unix()},
		{App: "legacy", User: user("alice"), Resource: "legacy-app", Via: grants.ViaStanding, Count: 1, Last: prev.Unix()},
	}); err != nil {
		t.Fatal(err)
	}
	bobGrant, err := store.AddGrant(ctx, grants.Grant{User: user("bob"), Email: "bob@example.com", App: "payroll", Resource: "payroll-reports",
		Reason: "audit", ApprovedBy: "carol@example.com", CreatedAt: prev.Unix(), ExpiresAt: wednesday10.Add(30 * 24 * time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}

	// Two nodes check the schedule: one campaign.
	rg.CheckReviews(ctx)
	node2.CheckReviews(ctx)
	rg.CheckReviews(ctx)
	cs, _ := store.Reviews(ctx, "payroll", time.Time{})
	if len(cs) != 1 || len(rg.eventsNamed(EventReviewOpened))+len(node2.eventsNamed(EventReviewOpened)) != 1 {
		t.Fatalf("campaigns %d, opened events %d+%d", len(cs), len(rg.eventsNamed(EventReviewOpened)), len(node2.eventsNamed(EventReviewOpened)))
	}
	c := cs[0]
	if c.PeriodEnd != start.Unix() || c.PeriodStart != start.Add(-quarterly.Every).Unix() || c.EndsAt != wednesday10.Add(quarterly.Duration).Unix() ||
		len(c.Items) != 4 || rg.open["quarterly"] != 4 {
		t.Fatalf("the campaign: %+v (open items %v)", c, rg.open)
	}
	items := map[string]grants.ReviewItem{}
	for _, it := range c.Items {
		items[it.User.Sub] = it
	}
	if b := items["bob"]; b.Source != grants.ViaGrant || b.GrantID != bobGrant.ID || b.ApprovedBy != "carol@example.com" || b.Count != 0 || b.LastUsed != 0 {
		t.Errorf("bob's grant, never used: %+v", b)
	}
	if a := items["alice"]; a.Source != grants.ViaStanding || a.Resource != "/payslips" || a.Count != 12 || a.LastUsed != prev.Unix() {
		t.Errorf("alice's standing access: %+v", a)
	}

	// carol (a manager) sees what she reviews: not her own access.
	carol := rg.person("carol", "managers")
	cc := rg.cookie(t, carol)
	page := rg.handle(request(http.MethodGet, PathReviews, false, cc))
	want(t, "carol's reviews", page, Page, http.StatusOK, ResultInternal, ReasonReviews)
	rp := page.Answer.Data.(ReviewsPage)
	if len(rp.Campaigns) != 1 || len(rp.Campaigns[0].Items) != 3 || rp.Campaigns[0].Unused != 3 || !strings.Contains(rp.GroupsNote, "remove the person from the group") {
		t.Fatalf("carol's page: %+v", rp)
	}
	for _, v := range rp.Campaigns[0].Items {
		if v.Who == "carol@example.com" {
			t.Error("carol is shown her own access")
		}
		if v.Who == "bob@example.com" && (v.LastUsed != "never" || v.Source != "temporary access approved by carol@example.com" || v.Standing) {
			t.Errorf("bob's item: %+v", v)
		}
	}
	// Alice is no reviewer: nothing to review.
	ac := rg.cookie(t, rg.person("alice", "staff"))
	if p := rg.handle(request(http.MethodGet, PathReviews, false, ac)); len(p.Answer.Data.(ReviewsPage).Campaigns) != 0 {
		t.Errorf("alice's page: %+v", p.Answer.Data)
	}

	// Bob is in, through his grant, on both nodes.
	bc := rg.cookie(t, rg.person("bob", "contractors"))
	want(t, "bob with his grant", rg.handle(request(http.MethodGet, "/reports", false, bc)), Allow, 0, ResultAllow, ReasonNone)

	csrf := rg.csrf.Token(carol.ID)
	decide := func(item, action, reason string, cookie *http.Cookie, token string) Outcome {
		return rg.handle(form(PathReviews, url.Values{"csrf": {token}, "campaign": {c.ID}, "item": {item}, "action": {action}, "reason": {reason}}, cookie))
	}
	// Hostile forms.
	want(t, "no CSRF token", decide(items["bob"].ID, "revoke", "x", cc, ""), Deny, http.StatusForbidden, ResultDeny, ReasonCSRF)
	cross := form(PathReviews, url.Values{"csrf": {csrf}, "campaign": {c.ID}, "item": {items["bob"].ID}, "action": {"revoke"}, "reason": {"x"}}, cc)
	cross.Header.Set("Sec-Fetch-Site", "cross-site")
	want(t, "another site", rg.handle(cross), Deny, http.StatusForbidden, ResultDeny, ReasonCrossSiteForm)
	want(t, "an unknown item", decide("nope", "keep", "", cc, csrf), BadRequest, http.StatusNotFound, ResultDeny, ReasonReviewUnknown)
	want(t, "an unknown campaign", rg.handle(form(PathReviews, url.Values{"csrf": {csrf}, "campaign": {"nope"}, "item": {items["bob"].ID}, "action": {"keep"}}, cc)),
		BadRequest, http.StatusNotFound, ResultDeny, ReasonReviewUnknown)
	want(t, "a bad action", decide(items["bob"].ID, "approve", "", cc, csrf), BadRequest, http.StatusBadRequest, ResultDeny, ReasonBadForm)
	out := decide(items["carol"].ID, "keep", "", cc, csrf)
	want(t, "reviewing her own access", out, Deny, http.StatusForbidden, ResultDeny, ReasonNotAReviewer)
	if len(out.Events) != 1 || out.Events[0].Msg != EventReviewRefused {
		t.Errorf("self-review events: %+v", out.Events)
	}
	want(t, "alice is not a reviewer", decide(items["bob"].ID, "revoke", "x", ac, rg.csrf.Token("sid-alice")), Deny, http.StatusForbidden, ResultDeny, ReasonNotAReviewer)
	want(t, "a revoke without a reason", decide(items["bob"].ID, "revoke", " \u202e ", cc, csrf), BadRequest, http.StatusBadRequest, ResultDeny, ReasonReasonMissing)

	// carol revokes bob's unused grant: it ends at once, on every node.
	out = decide(items["bob"].ID, "revoke", "contract ended", cc, csrf)
	want(t, "revoke bob's grant", out, Redirect, http.StatusSeeOther, ResultReviewRevoked, ReasonNone)
	if len(out.Events) != 2 || out.Events[0].Msg != EventGrantRevoked || out.Events[1].Msg != EventReviewRevoked || field(out.Events[1], "why") != "contract ended" {
		t.Errorf("revoke events: %+v", out.Events)
	}
	for _, node := range []*reviewGate{rg, node2} {
		res := node.handle(request(http.MethodGet, "/reports", false, node.cookie(t, node.person("bob", "contractors"))))
		want(t, "bob after the revoke", res, Deny, http.StatusForbidden, ResultDeny, ReasonPolicyDeny)
	}
	// Deciding twice changes nothing.
	out = decide(items["bob"].ID, "keep", "", cc, csrf)
	want(t, "deciding twice", out, Redirect, http.StatusSeeOther, ResultInternal, ReasonNone)
	if out.Location != PathReviews+"?notice=already_decided" || len(out.Events) != 0 {
		t.Errorf("deciding twice: %q %+v", out.Location, out.Events)
	}

	// Standing access revoked: denied, until a grant approved after it.
	dc := rg.cookie(t, rg.person("dave", "payroll-users"))
	want(t, "dave before", rg.handle(request(http.MethodGet, "/reports", false, dc)), Allow, 0, ResultAllow, ReasonNone)
	want(t, "revoke dave's standing access", decide(items["dave"].ID, "revoke", "moved team", cc, csrf), Redirect, http.StatusSeeOther, ResultReviewRevoked, ReasonNone)
	res := rg.handle(request(http.MethodGet, "/reports", false, dc))
	want(t, "dave after", res, Deny, http.StatusForbidden, ResultDeny, ReasonPolicyDeny)
	if res.Audit.PolicyReason != "your access to payroll-reports was removed in an access review" {
		t.Errorf("the deny's reason: %q", res.Audit.PolicyReason)
	}
	if _, err := store.AddGrant(ctx, grants.Grant{User: user("dave"), Resource: "payroll-reports", App: "payroll",
		CreatedAt: wednesday10.Unix() + 1, ExpiresAt: wednesday10.Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	rg.cfg.Grants.Invalidate(user("dave"))
	want(t, "dave with a grant approved after the review", rg.handle(request(http.MethodGet, "/reports", false, dc)), Allow, 0, ResultAllow, ReasonNone)
	// alice's is kept.
	want(t, "keep alice's", decide(items["alice"].ID, "keep", "", cc, csrf), Redirect, http.StatusSeeOther, ResultReviewKept, ReasonNone)

	rg.CheckReviews(ctx)
	if rg.open["quarterly"] != 1 { // carol's own, which someone else must review
		t.Errorf("open items after carol's review: %v", rg.open)
	}

	// The next period: nodes that were down when it started catch up with
	// one campaign for it. The first ended (on_timeout revoke decides
	// carol's item); the new one lists what was used since.
	if err := store.AddUsage(ctx, []grants.Usage{
		{App: "payroll", User: user("erin"), Resource: "/old", Via: grants.ViaStanding, Count: 1, Last: wednesday10.Add(time.Hour).Unix()},
		{App: "payroll", User: user("frank"), Resource: "/new", Via: grants.ViaStanding, Count: 1, Last: wednesday10.Add(2 * time.Hour).Unix()},
	}); err != nil {
		t.Fatal(err)
	}
	for _, node := range []*reviewGate{rg, node2} {
		node.clock.add(quarterly.Every + 24*time.Hour) // down over the period's start
	}
	for _, node := range []*reviewGate{node2, rg, node2} {
		node.CheckReviews(ctx)
	}
	cs, _ = store.Reviews(ctx, "payroll", time.Time{})
	if len(cs) != 2 || cs[0].Undecided() != 0 || cs[0].Item(items["carol"].ID).Decision.By != reviewByTimeout {
		t.Fatalf("a period later: %d campaigns, the first %+v", len(cs), cs[0])
	}
	decider := rg
	if len(node2.eventsNamed(EventReviewRevoked)) > 0 {
		decider = node2
	}
	if e := append(rg.eventsNamed(EventReviewRevoked), node2.eventsNamed(EventReviewRevoked)...); len(e) != 1 || field(e[0], "actor") != reviewByTimeout {
		t.Errorf("on_timeout revoke events: %+v", e)
	}
	// (Both nodes' caches share one memory store here, whose events reach
	// one cache only: the deciding node's mirror has it at once.)
	if rr := decider.cfg.Grants.RevokedResources(user("carol")); len(rr) != 1 || rr[0].Resource != "payroll-reports" || rr[0].By != reviewByTimeout {
		t.Errorf("carol's standing access after the timeout: %+v", rr)
	}
	if rr, _ := store.ResourceRevocations(ctx); len(rr) != 2 {
		t.Errorf("resource revocations in the store: %+v", rr)
	}
	// erin's and frank's standing access, dave's grant; bob's revoked one
	// was decided already.
	if cs[1].Item(grants.ReviewItemID(user("erin"), "/old", grants.ViaStanding, "")) == nil || len(cs[1].Items) != 3 {
		t.Errorf("the new period's campaign: %+v", cs[1])
	}
}

// TestReviewBulkAndStepUp: "revoke everything unused for 30 days"
// revokes only what nobody used lately, and the page needs the
// approvers' step-up.
func TestReviewBulkAndStepUp(t *testing.T) {
	ctx := context.Background()
	rg := newReviewGate(t, nil, nil)
	iss := rg.idp.URL
	start := quarterly.PeriodStart(wednesday10)
	if err := rg.store.AddUsage(ctx, []grants.Usage{
		{App: "payroll", User: grants.User{Iss: iss, Sub: "erin"}, Resource: "/old", Via: grants.ViaStanding, Count: 1, Last: start.Add(-40 * 24 * time.Hour).Unix()},
		{App: "payroll", User: grants.User{Iss: iss, Sub: "frank"}, Resource: "/new", Via: grants.ViaStanding, Count: 1, Last: start.Add(-time.Hour).Unix()},
		{App: "payroll", User: grants.User{Iss: iss, Sub: "frank"}, Resource: "/new", Via: grants.ViaStanding, Count: 1, Last: wednesday10.Add(-time.Hour).Unix()},
	}); err != nil {
		t.Fatal(err)
	}
	rg.CheckReviews(ctx)
	cs, _ := rg.store.Reviews(ctx, "payroll", time.Time{})
	if len(cs) != 1 || len(cs[0].Items) != 2 {
		t.Fatalf("campaign: %+v", cs)
	}
	carol := rg.person("carol", "managers")
	cc := rg.cookie(t, carol)
	bulk := url.Values{"csrf": {rg.csrf.Token(carol.ID)}, "campaign": {cs[0].ID}, "action": {"revoke_unused"}}
	out := rg.handle(form(PathReviews, bulk, cc))
	want(t, "revoke everything unused", out, Redirect, http.StatusSeeOther, ResultReviewRevoked, ReasonNone)
	c, _ := rg.store.Review(ctx, cs[0].ID)
	for _, it := range c.Items {
		switch it.User.Sub {
		case "erin":
			if it.Decision == nil || it.Decision.Action != grants.ActionRevoke || !it.Decision.Applied || it.Decision.Reason != "unused for 30 days" {
				t.Errorf("erin's unused access: %+v", it.Decision)
			}
		case "frank":
			if it.Decision != nil {
				t.Errorf("frank used his lately, but: %+v", it.Decision)
			}
		}
	}
	out = rg.handle(form(PathReviews, bulk, cc))
	if out.Location != PathReviews+"?notice=nothing_unused" {
		t.Errorf("the bulk revoke again: %q", out.Location)
	}

	// With the approvers' step-up, the page asks for it first.
	su := newReviewGate(t, nil, func(c *Config) {
		c.ApprovalStepUp = &authn.Requirement{ACR: []string{"urn:mfa"}, MaxAge: 10 * time.Minute}
	})
	want(t, "reviews without the step-up", su.handle(request(http.MethodGet, PathReviews, false, su.cookie(t, su.person("carol", "managers")))),
		StepUp, http.StatusUnauthorized, ResultStepUpRequired, ReasonStepUpACR)
	// The store down: the page says so.
	down := grants.NewCache(deadReviews{grants.NewMemory()}, 10*time.Millisecond)
	t.Cleanup(func() { _ = down.Close() })
	dg := newReviewGate(t, nil, func(c *Config) { c.Grants = down })
	want(t, "reviews, store down", dg.handle(request(http.MethodGet, PathReviews, false, dg.cookie(t, dg.person("carol", "managers")))),
		Unavailable, http.StatusServiceUnavailable, ResultError, ReasonGrantsDown)
	// A site without reviews says so.
	none := newTestGate(t, nil)
	want(t, "no reviews", none.handle(request(http.MethodGet, PathReviews, false, none.cookie(t, none.session()))), Page, http.StatusOK, ResultInternal, ReasonNoReviews)
}

// deadReviews is a store whose campaigns cannot be read.
type deadReviews struct{ grants.Store }

func (deadReviews) Reviews(context.Context, string, time.Time) ([]grants.Campaign, error) {
	return nil, grants.ErrUnavailable
}

func TestReviewPeriods(t *testing.T) {
	rc := ReviewConfig{Every: 24 * time.Hour}
	at := time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)
	if got := rc.PeriodStart(at); !got.Equal(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("a day's period starts at %s", got)
	}
	if got := rc.PeriodStart(time.Unix(-10, 0)); got.Unix() != -86400 {
		t.Errorf("before the epoch: %d", got.Unix())
	}
	for _, bad := range []ReviewConfig{
		{Name: "", Every: time.Hour, Reviewers: []string{"m"}, Scope: "all", OnTimeout: "keep", Duration: time.Hour},
		{Name: "a b", Every: time.Hour, Reviewers: []string{"m"}, Scope: "all", OnTimeout: "keep", Duration: time.Hour},
		{Name: "q", Every: time.Minute, Reviewers: []string{"m"}, Scope: "all", OnTimeout: "keep", Duration: time.Minute},
		{Name: "q", Every: time.Hour, Scope: "all", OnTimeout: "keep", Duration: time.Hour},
		{Name: "q", Every: time.Hour, Reviewers: []string{"m"}, Scope: "some", OnTimeout: "keep", Duration: time.Hour},
		{Name: "q", Every: time.Hour, Reviewers: []string{"m"}, Scope: "all", OnTimeout: "ignore", Duration: time.Hour},
		{Name: "q", Every: time.Hour, Reviewers: []string{"m"}, Scope: "all", OnTimeout: "keep", Duration: 2 * time.Hour},
	} {
		if CheckReview(bad) == nil {
			t.Errorf("CheckReview(%+v) accepted it", bad)
		}
	}
	if err := CheckReview(quarterly); err != nil {
		t.Error(err)
	}
}
