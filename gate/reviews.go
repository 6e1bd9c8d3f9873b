package gate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// Access reviews (docs/reviews.md): every period, a campaign lists who
// had access to this app in the period before (standing access, from
// usage not through a grant; grants, with their approvers) with its
// usage, and reviewers keep or revoke each item on /.gatehouse/reviews.
// Every node runs the schedule; the store opens each period's campaign
// once. When a campaign ends, on_timeout decides what nobody did.

// ReviewConfig is one review of the app: `review <name> { every;
// reviewers; scope; on_timeout; duration }`.
type ReviewConfig struct {
	Name      string
	Every     time.Duration // a campaign opens at the start of every period (periods count from 1970-01-01 UTC)
	Reviewers []string      // groups whose members review
	Scope     string        // grants.ScopeStanding, ScopeGrants or ScopeAll
	OnTimeout string        // grants.ActionKeep, ActionRevoke or ActionFlag
	Duration  time.Duration // how long a campaign stays open
}

// PeriodStart is the start of the period that holds t: periods of Every
// counted from the Unix epoch, so every node agrees on them.
func (rc ReviewConfig) PeriodStart(t time.Time) time.Time {
	secs := int64(rc.Every / time.Second)
	if secs <= 0 {
		return t
	}
	return time.Unix(t.Unix()-((t.Unix()%secs)+secs)%secs, 0)
}

// Reviews' own constants.
const (
	// ReviewTick is how often each node checks its reviews' schedule:
	// a campaign opens at most this long after its period starts, and
	// on_timeout applies at most this long after a campaign ends.
	ReviewTick = 30 * time.Second
	// reviewFirstCheck is how long after Start the schedule is first
	// checked.
	reviewFirstCheck = 2 * time.Second
	// UnusedFor is "unused" for the bulk revoke.
	UnusedFor = 30 * 24 * time.Hour
	// reviewByTimeout decides what nobody did in time.
	reviewByTimeout = "timeout"
)

// PathReviews is the reviewers' page.
const PathReviews = "/.gatehouse/reviews"

// Audit values of access reviews (docs/audit-log.md).
const (
	ResultReviewKept    Result = "review_kept"    // a reviewer kept access
	ResultReviewRevoked Result = "review_revoked" // a reviewer revoked access

	ReasonReviews       Reason = "reviews"             // the reviews page
	ReasonNoReviews     Reason = "no_reviews"          // the reviews page of a site with no review
	ReasonReviewUnknown Reason = "review_item_unknown" // deciding an item (or campaign) that does not exist here
	ReasonNotAReviewer  Reason = "not_a_reviewer"      // not in the review's reviewers, one's own access, or the review policy says no
	ReasonReviewEnded   Reason = "review_ended"        // deciding in a campaign whose time is over

	EventReviewOpened       = "access review opened"
	EventReviewKept         = "access kept in review"
	EventReviewRevoked      = "access revoked in review"
	EventReviewFlagged      = "access flagged in review"
	EventReviewRefused      = "review refused"
	EventReviewRevokeFailed = "review-revoke failed"
)

// The audit lists (outcome.go) know these too, so the audit log's
// documentation test covers them; the router knows the page's methods.
func init() {
	Results = append(Results, ResultReviewKept, ResultReviewRevoked)
	Reasons = append(Reasons, ReasonReviews, ReasonNoReviews, ReasonReviewUnknown, ReasonNotAReviewer, ReasonReviewEnded)
	Events = append(Events, EventReviewOpened, EventReviewKept, EventReviewRevoked, EventReviewFlagged, EventReviewRefused, EventReviewRevokeFailed)
	endpointMethods[PathReviews] = "GET, POST"
	for k, v := range map[string]string{
		"kept":           "Kept.",
		"revoked":        "Revoked. The access ended at once.",
		"revoked_unused": "Everything unused for 30 days that you review was revoked.",
		"nothing_unused": "Nothing you review was unused for 30 days.",
	} {
		notices[k] = v
	}
}

// OpenCampaign opens review rc's campaign id of app for the period
// from..to, listing each user × resource that had access in it, and
// reports whether this call opened it (of any number of nodes, one
// does). by names who opened it ("schedule", or an operator).
func OpenCampaign(ctx context.Context, s grants.Store, app string, rc ReviewConfig, id string, from, to, now time.Time, by string) (grants.Campaign, bool, error) {
	c := grants.Campaign{ID: id, App: app, Review: rc.Name, Scope: rc.Scope, OnTimeout: rc.OnTimeout, Reviewers: rc.Reviewers,
		PeriodStart: from.Unix(), PeriodEnd: to.Unix(), OpenedAt: now.Unix(), EndsAt: now.Add(rc.Duration).Unix(), OpenedBy: by}
	usage, err := s.Usage(ctx, app, from, to)
	if err != nil {
		return c, false, err
	}
	type key struct {
		u        grants.User
		resource string
	}
	viaGrant, used := map[key]grants.Usage{}, map[string]bool{}
	for _, u := range usage {
		used[u.Resource] = true
		switch {
		case u.Via == grants.ViaGrant:
			viaGrant[key{u.User, u.Resource}] = u
		case rc.Scope != grants.ScopeGrants:
			c.Items = append(c.Items, grants.ReviewItem{User: u.User, Email: u.Email, Resource: u.Resource, Source: grants.ViaStanding,
				LastUsed: u.Last, Count: u.Count})
		}
	}
	if rc.Scope != grants.ScopeStanding {
		gs, err := s.Grants(ctx, grants.GrantFilter{All: true, Now: now})
		if err != nil {
			return c, false, err
		}
		for _, g := range gs {
			// An operator's grant may name no app: it is this app's when
			// this app's requests used its resource.
			if g.App != app && (g.App != "" || !used[g.Resource]) {
				continue
			}
			// Grants in force at some time in the period; one revoked
			// since was decided already.
			if g.CreatedAt >= to.Unix() || g.ExpiresAt <= from.Unix() || g.RevokedAt != 0 {
				continue
			}
			u := viaGrant[key{g.User, g.Resource}]
			c.Items = append(c.Items, grants.ReviewItem{User: g.User, Email: g.Email, Resource: g.Resource, Source: grants.ViaGrant,
				GrantID: g.ID, ApprovedBy: g.ApprovedBy, GrantExpiresAt: g.ExpiresAt, LastUsed: u.Last, Count: u.Count})
		}
	}
	for i := range c.Items {
		it := &c.Items[i]
		it.ID = grants.ReviewItemID(it.User, it.Resource, it.Source, it.GrantID)
	}
	sort.SliceStable(c.Items, func(i, j int) bool {
		a, b := &c.Items[i], &c.Items[j]
		if a.Email+a.User.Sub != b.Email+b.User.Sub {
			return a.Email+a.User.Sub < b.Email+b.User.Sub
		}
		return a.Resource < b.Resource
	})
	c.Items = slices.CompactFunc(c.Items, func(a, b grants.ReviewItem) bool { return a.ID == b.ID })
	return s.OpenReview(ctx, c)
}

// reviewState is what a node remembers of its reviews: the campaigns it
// knows are open (no need to ask the store again), and the open items
// per review for the metric.
type reviewState struct {
	mu     sync.Mutex
	opened map[string]bool
}

// runReviews runs the reviews' schedule every ReviewTick until stop,
// the first time reviewFirstCheck after Start: a configuration only
// validated (provisioned, then cleaned up at once) never reaches the
// store.
func (g *Gate) runReviews(stop <-chan struct{}) {
	first := time.NewTimer(reviewFirstCheck)
	defer first.Stop()
	select {
	case <-stop:
		return
	case <-first.C:
	}
	t := time.NewTicker(ReviewTick)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		g.CheckReviews(ctx)
		cancel()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// CheckReviews runs the reviews' schedule once (Start runs it every
// ReviewTick): it opens each review's campaign for the current period if
// it is not open yet (also the period a node missed while it was down),
// applies on_timeout to the undecided items of campaigns that ended,
// carries out revokes decided but not carried out, and counts the items
// still open (OnReviewItems).
func (g *Gate) CheckReviews(ctx context.Context) {
	now := g.now()
	store := g.cfg.Grants.Store()
	for _, rc := range g.cfg.Reviews {
		start := rc.PeriodStart(now)
		id := grants.CampaignID(g.cfg.App, rc.Name, start.Unix())
		g.reviews.mu.Lock()
		known := g.reviews.opened[id]
		g.reviews.mu.Unlock()
		if known {
			continue
		}
		if _, err := store.Review(ctx, id); err != nil && !errors.Is(err, grants.ErrNotFound) {
			g.log.Warn("access review: the store cannot be read; the schedule tries again", zap.String("review", rc.Name), zap.Error(err))
			continue
		} else if err != nil {
			c, opened, err := OpenCampaign(ctx, store, g.cfg.App, rc, id, start.Add(-rc.Every), start, now, "schedule")
			if err != nil {
				g.log.Warn("access review: the campaign could not be opened; the schedule tries again", zap.String("review", rc.Name), zap.Error(err))
				continue
			}
			if opened {
				g.event(CampaignEvent(EventReviewOpened, &c, "schedule"))
			}
		}
		g.reviews.mu.Lock()
		if g.reviews.opened == nil {
			g.reviews.opened = map[string]bool{}
		}
		g.reviews.opened[id] = true
		g.reviews.mu.Unlock()
	}
	cs, err := store.Reviews(ctx, g.cfg.App, g.reviewsSince(now))
	if err != nil {
		g.log.Warn("access review: campaigns cannot be read; the schedule tries again", zap.Error(err))
		return
	}
	open := map[string]int{}
	for _, rc := range g.cfg.Reviews {
		open[rc.Name] = 0
	}
	for i := range cs {
		c := &cs[i]
		for j := range c.Items {
			it := &c.Items[j]
			switch {
			case it.Decision == nil && c.Ended(now):
				g.timeOut(ctx, c, it, now)
			case it.Decision != nil && it.Decision.Action == grants.ActionRevoke && !it.Decision.Applied && now.Unix()-it.Decision.At > 60:
				// Decided, not carried out (the store failed in between).
				if events, err := g.revokeItem(ctx, c, *it, it.Decision.By, it.Decision.By, it.Decision.Reason, now); err != nil {
					g.log.Warn("access review: a revoke is not carried out yet; the schedule tries again", zap.String("campaign", c.ID), zap.Error(err))
				} else {
					g.event(events...)
				}
			}
		}
		if !c.Ended(now) {
			open[c.Review] += c.Undecided()
		}
	}
	if g.cfg.OnReviewItems != nil {
		for name, n := range open {
			g.cfg.OnReviewItems(name, n)
		}
	}
}

// reviewsSince is how far back the schedule and the page look for
// campaigns: two of the longest period (a campaign lasts at most its
// period), so that older ones, settled long ago, are not read again and
// again.
func (g *Gate) reviewsSince(now time.Time) time.Time {
	var longest time.Duration
	for _, rc := range g.cfg.Reviews {
		longest = max(longest, rc.Every)
	}
	return now.Add(-2 * longest)
}

// timeOut applies the campaign's on_timeout to an item nobody decided.
func (g *Gate) timeOut(ctx context.Context, c *grants.Campaign, it *grants.ReviewItem, now time.Time) {
	store := g.cfg.Grants.Store()
	why := "nobody decided it before the review ended"
	decided, err := store.DecideReviewItem(ctx, c.ID, it.ID, grants.ItemDecision{Action: c.OnTimeout, By: reviewByTimeout, At: now.Unix(), Reason: why})
	if errors.Is(err, grants.ErrAlreadyDecided) {
		return // another node (or a late reviewer) did
	}
	if err != nil {
		g.log.Warn("access review: on_timeout not applied yet; the schedule tries again", zap.String("campaign", c.ID), zap.Error(err))
		return
	}
	*it = decided
	switch c.OnTimeout {
	case grants.ActionKeep:
		g.event(ReviewEvent(EventReviewKept, c, &decided, reviewByTimeout, why))
	case grants.ActionFlag:
		g.event(ReviewEvent(EventReviewFlagged, c, &decided, reviewByTimeout, why))
	case grants.ActionRevoke:
		events, err := g.revokeItem(ctx, c, decided, reviewByTimeout, reviewByTimeout, why, now)
		if err != nil {
			g.log.Warn("access review: a revoke is not carried out yet; the schedule tries again", zap.String("campaign", c.ID), zap.Error(err))
		}
		g.event(events...)
	}
}

// revokeItem carries out a revoke: a grant ends at once (on every node),
// standing access becomes a resource revocation every node mirrors. by
// is recorded with the revocation (the reviewer's email, or "timeout"),
// actor in the events (the reviewer's subject). The events are what
// happened, or the failure.
func (g *Gate) revokeItem(ctx context.Context, c *grants.Campaign, it grants.ReviewItem, by, actor, why string, now time.Time) ([]Event, error) {
	store := g.cfg.Grants.Store()
	var events []Event
	fail := func(err error) ([]Event, error) {
		e := ReviewEvent(EventReviewRevokeFailed, c, &it, actor, why)
		e.Failed, e.Fields = true, append(e.Fields, zap.String("error", err.Error()))
		return append(events, e), err
	}
	switch it.Source {
	case grants.ViaGrant:
		gr, err := store.RevokeGrant(ctx, it.GrantID, by, now)
		switch {
		case errors.Is(err, grants.ErrNotFound):
			// Purged since: nothing left to end.
		case errors.Is(err, grants.ErrNotDurable):
			g.cfg.Grants.NoteGrantRevoked(gr) // holds here, written back should a failover lose it
			return fail(err)
		case err != nil:
			return fail(err)
		default:
			g.cfg.Grants.NoteGrantRevoked(gr)
			events = append(events, GrantEvent(EventGrantRevoked, &gr, actor, "revoked in access review "+c.Review))
		}
	default:
		rr := grants.ResourceRevocation{User: it.User, Email: it.Email, App: c.App, Resource: it.Resource, At: now.Unix(), By: by,
			Reason: why, Campaign: c.ID}
		err := store.RevokeResource(ctx, rr)
		if err == nil || errors.Is(err, grants.ErrNotDurable) {
			g.cfg.Grants.NoteResourceRevoked(rr)
		}
		if err != nil {
			return fail(err)
		}
	}
	if err := store.ReviewItemApplied(ctx, c.ID, it.ID); err != nil {
		return fail(err)
	}
	return append(events, ReviewEvent(EventReviewRevoked, c, &it, actor, why)), nil
}

// revokedResources are the app's resources access reviews took away from
// the user, less those a grant approved after the revocation gives back
// while it lasts: the policy input's revoked_resources. From the node's
// mirror, with no store call; nil (and no allocation) for a user with
// none.
func (g *Gate) revokedResources(s *authn.Session, gs []grants.Grant) []string {
	var out []string
	for _, rr := range g.cfg.Grants.RevokedResources(g.user(s)) {
		if rr.App != g.cfg.App || slices.ContainsFunc(gs, func(gr grants.Grant) bool { return gr.Resource == rr.Resource && gr.CreatedAt >= rr.At }) {
			continue
		}
		out = append(out, rr.Resource)
	}
	return out
}

// event writes events that no request caused (the schedule's).
func (g *Gate) event(events ...Event) {
	if g.cfg.OnEvent == nil {
		return
	}
	for _, e := range events {
		g.cfg.OnEvent(e)
	}
}

// CampaignEvent is an audit line about a campaign.
func CampaignEvent(msg string, c *grants.Campaign, actor string) Event {
	return Event{Msg: msg, Fields: withActor(actor, "",
		zap.String("campaign", c.ID), zap.String("review", c.Review), zap.String("scope", c.Scope), zap.Int("items", len(c.Items)),
		zap.Time("period_start", time.Unix(c.PeriodStart, 0)), zap.Time("period_end", time.Unix(c.PeriodEnd, 0)),
		zap.Time("ends", time.Unix(c.EndsAt, 0)))}
}

// ReviewEvent is an audit line about one item of a campaign.
func ReviewEvent(msg string, c *grants.Campaign, it *grants.ReviewItem, actor, why string) Event {
	return Event{Msg: msg, Fields: withActor(actor, why,
		zap.String("campaign", c.ID), zap.String("review", c.Review), zap.String("item", it.ID),
		zap.String("user", it.User.Sub), zap.String("iss", it.User.Iss), zap.String("email", it.Email),
		zap.String("resource", it.Resource), zap.String("source", it.Source), zap.String("grant_id", it.GrantID),
		zap.String("approved_by", it.ApprovedBy), zap.Int64("count", it.Count), zap.Int64("last_used", it.LastUsed))}
}

// The reviews page.

// ReviewsPage is the data of the reviews page (reviews.html).
type ReviewsPage struct {
	CSRF      string         // the forms' csrf field
	Campaigns []CampaignView // the open campaigns with items this user reviews
	// GroupsNote says, in plain words, that access through a group is
	// given by the sign-in service: revoking it here blocks it in this
	// app, and an administrator must also remove the group there.
	GroupsNote string
}

// CampaignView is one open campaign on the reviews page.
type CampaignView struct {
	ID     string // the forms' campaign field
	Review string // the review's name
	Period string // the period reviewed, for people ("2026-08-27 to 2026-11-25")
	Ends   string // when on_timeout applies, UTC
	// OnTimeout says what happens then to what nobody decided, in plain
	// words.
	OnTimeout string
	Unused    int // undecided items of this reviewer unused for 30 days: the bulk revoke's count
	Items     []ReviewItemView
}

// ReviewItemView is one item on the reviews page.
type ReviewItemView struct {
	ID       string // the forms' item field
	Who      string // "Name <email>", else the subject
	Resource string
	Standing bool   // through groups (else a grant)
	Source   string // for people: "through their groups", "temporary access approved by carol@example.com"
	LastUsed string // for people: "never", "2026-11-20"
	Count    int64
	Unused   bool   // not used for 30 days
	Decided  string // for people: "kept by carol@example.com", "revoked by …: reason", or "" while open
}

// groupsNote is the page's (and the export's) word on standing access.
const groupsNote = "Access through a group comes from your organisation's sign-in service. Revoking it here blocks it in this application at once; an administrator must also remove the person from the group there."

// reviewsPage is the reviewers' page: the open campaigns' items this
// user may review, with keep and revoke, and "revoke everything unused
// for 30 days". The reviewer's step-up (approval_step_up) and who may
// review what are checked again on every submit.
func (g *Gate) reviewsPage(req *Request, out Outcome) Outcome {
	r := req.HTTP
	in, out, ok := g.approverPage(req, out, PathReviews)
	if !ok {
		return out
	}
	sess := in.Session
	if len(g.cfg.Reviews) == 0 {
		out.Kind, out.Status, out.Reason = Page, http.StatusOK, ReasonNoReviews
		out.Answer = &Answer{Title: "Access reviews", Message: "Nobody reviews access here: this application has no access reviews."}
		out.identify(out.Answer)
		return out
	}
	ctx, cancel, store := g.pageStore(req)
	defer cancel()
	if r.Method == http.MethodPost {
		if !g.checkForm(req, &out, &in) {
			return out
		}
		return g.decideReview(ctx, req, out, in, store)
	}
	cs, err := store.Reviews(ctx, g.cfg.App, g.reviewsSince(req.Start))
	if err != nil {
		return g.storeDown(out, err)
	}
	unused, err := g.recentlyUsed(ctx, store, req.Start)
	if err != nil {
		return g.storeDown(out, err)
	}
	page := ReviewsPage{CSRF: g.csrf.Token(sess.ID), GroupsNote: groupsNote}
	var mine []grants.Campaign
	for i := range cs {
		c := &cs[i]
		if c.Ended(req.Start) {
			continue
		}
		view := CampaignView{ID: c.ID, Review: c.Review, Ends: time.Unix(c.EndsAt, 0).UTC().Format("2006-01-02 15:04 MST"),
			Period:    time.Unix(c.PeriodStart, 0).UTC().Format("2006-01-02") + " to " + time.Unix(c.PeriodEnd-1, 0).UTC().Format("2006-01-02"),
			OnTimeout: onTimeoutWords[c.OnTimeout]}
		shown := *c
		shown.Items = nil
		for j := range c.Items {
			it := &c.Items[j]
			if !g.mayReview(req, &out, in, c, it) {
				continue
			}
			v := viewReviewItem(it, unused)
			if v.Unused && it.Decision == nil {
				view.Unused++
			}
			view.Items = append(view.Items, v)
			shown.Items = append(shown.Items, *it)
		}
		if len(view.Items) > 0 {
			page.Campaigns = append(page.Campaigns, view)
			mine = append(mine, shown)
		}
	}
	out.Kind, out.Status, out.Reason = Page, http.StatusOK, ReasonReviews
	out.Answer = &Answer{Title: "Access reviews", Page: "reviews", Notice: notices[r.URL.Query().Get("notice")],
		Data: page, JSON: map[string]any{"campaigns": mine, "csrf": page.CSRF, "note": groupsNote}}
	out.identify(out.Answer)
	return out
}

var onTimeoutWords = map[string]string{
	grants.ActionKeep:   "what nobody decided is kept",
	grants.ActionRevoke: "what nobody decided is revoked",
	grants.ActionFlag:   "what nobody decided is kept and flagged for the record",
}

// recentlyUsed is the set of user × resource of this app used within
// UnusedFor before now ("unused for 30 days" is what is not in it).
type usedSet map[string]bool

func usedKey(u grants.User, resource string) string { return u.Key() + "|" + resource }

func (g *Gate) recentlyUsed(ctx context.Context, store grants.Store, now time.Time) (usedSet, error) {
	us, err := store.Usage(ctx, g.cfg.App, now.Add(-UnusedFor), now.Add(time.Second))
	if err != nil {
		return nil, err
	}
	set := usedSet{}
	for _, u := range us {
		if now.Unix()-u.Last < int64(UnusedFor/time.Second) {
			set[usedKey(u.User, u.Resource)] = true
		}
	}
	return set, nil
}

func viewReviewItem(it *grants.ReviewItem, used usedSet) ReviewItemView {
	v := ReviewItemView{ID: it.ID, Who: it.User.Sub, Resource: it.Resource, Standing: it.Source == grants.ViaStanding,
		Count: it.Count, LastUsed: "never", Unused: !used[usedKey(it.User, it.Resource)]}
	if it.Email != "" {
		v.Who = it.Email
	}
	if v.Standing {
		v.Source = "through their groups"
	} else {
		v.Source = "temporary access approved by " + it.ApprovedBy
	}
	if it.LastUsed > 0 {
		v.LastUsed = time.Unix(it.LastUsed, 0).UTC().Format("2006-01-02")
	}
	if d := it.Decision; d != nil {
		words := map[string]string{grants.ActionKeep: "kept", grants.ActionRevoke: "revoked", grants.ActionFlag: "kept and flagged"}[d.Action]
		v.Decided = words + " by " + d.By
		if d.Reason != "" {
			v.Decided += ": " + d.Reason
		}
		if d.Action == grants.ActionRevoke && !d.Applied {
			v.Decided += " (being carried out)"
		}
	}
	return v
}

// mayReview reports whether the signed-in user may decide the item: a
// member of one of the campaign's reviewer groups, not the user whose
// access it is, and allowed by the review policy (when the policy has
// one; an error says no).
func (g *Gate) mayReview(req *Request, out *Outcome, in signedIn, c *grants.Campaign, it *grants.ReviewItem) bool {
	sess := in.Session
	if !slices.ContainsFunc(sess.Groups, func(grp string) bool { return slices.Contains(c.Reviewers, grp) }) {
		return false
	}
	if it.User.Iss == sess.Issuer && it.User.Sub == sess.Subject {
		return false
	}
	if g.cfg.Policy == nil {
		return true
	}
	src := g.inputSource(req, sess, in.Grants.Grants, in.GrantsErr)
	input := policies.NewInput(&src, nil, true)
	input.ReviewItem = &policies.ReviewItem{Review: c.Review, User: policies.Requester{Sub: it.User.Sub, Iss: it.User.Iss, Email: it.Email},
		Resource: it.Resource, Source: it.Source, ApprovedBy: it.ApprovedBy, LastUsed: it.LastUsed, Count: it.Count}
	rev := g.cfg.Policy.Current()
	out.Audit.Revision = rev.ID
	rv, err := rev.Review(context.WithoutCancel(req.HTTP.Context()), input.Value())
	policies.Release(input)
	if err != nil {
		g.log.Error("review policy error: not allowed", zap.String("decision_id", out.Audit.ID()), zap.String("item", it.ID), zap.Error(err))
		return false
	}
	return rv.MayReview
}

// decideReview keeps or revokes one item, or revokes every undecided
// item of a campaign this user reviews that was unused for 30 days.
func (g *Gate) decideReview(ctx context.Context, req *Request, out Outcome, in signedIn, store grants.Store) Outcome {
	r, sess, now := req.HTTP, in.Session, req.Start
	action := r.PostForm.Get("action")
	if action != grants.ActionKeep && action != grants.ActionRevoke && action != "revoke_unused" {
		return out.refuse(BadRequest, http.StatusBadRequest, ResultDeny, ReasonBadForm, &Answer{Error: "bad_request", Message: "Choose keep or revoke."})
	}
	unknown := func() Outcome {
		return out.refuse(BadRequest, http.StatusNotFound, ResultDeny, ReasonReviewUnknown, &Answer{Error: "not_found",
			Message: "There is no such access to review.", Return: PathReviews})
	}
	c, err := store.Review(ctx, r.PostForm.Get("campaign"))
	if errors.Is(err, grants.ErrNotFound) || (err == nil && c.App != g.cfg.App) {
		return unknown()
	}
	if err != nil {
		return g.storeDown(out, err)
	}
	if c.Ended(now) {
		return out.refuse(BadRequest, http.StatusConflict, ResultDeny, ReasonReviewEnded, &Answer{Error: "conflict", Title: "Review ended",
			Message: "This review has ended: what nobody decided was settled by its rules.", Return: PathReviews})
	}
	by := displayUser(sess)
	reason := CleanText(r.PostForm.Get("reason"), 200)
	if action == "revoke_unused" {
		return g.revokeUnused(ctx, req, out, in, store, &c, by)
	}
	it := c.Item(r.PostForm.Get("item"))
	if it == nil {
		return unknown()
	}
	if !g.mayReview(req, &out, in, &c, it) {
		out.Events = append(out.Events, g.reviewEvent(EventReviewRefused, &out, &c, it, string(ReasonNotAReviewer)))
		return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonNotAReviewer, &Answer{Error: "forbidden", Title: "Not allowed",
			Message: "You cannot review this access. Nobody reviews their own.", Return: PathReviews})
	}
	if action == grants.ActionRevoke && reason == "" {
		return out.refuse(BadRequest, http.StatusBadRequest, ResultDeny, ReasonReasonMissing, &Answer{Error: "bad_request",
			Message: "Please say why you revoke this access.", Return: PathReviews})
	}
	decided, err := store.DecideReviewItem(ctx, c.ID, it.ID, grants.ItemDecision{Action: action, By: by, At: now.Unix(), Reason: reason})
	if errors.Is(err, grants.ErrAlreadyDecided) {
		return out.redirect(Redirect, http.StatusSeeOther, PathReviews+"?notice=already_decided")
	}
	if err != nil {
		return g.storeDown(out, err)
	}
	if action == grants.ActionKeep {
		out.Result = ResultReviewKept
		out.Events = append(out.Events, g.reviewEvent(EventReviewKept, &out, &c, &decided, reason))
		return out.redirect(Redirect, http.StatusSeeOther, PathReviews+"?notice=kept")
	}
	events, err := g.revokeItem(ctx, &c, decided, by, out.Audit.User, reason, now)
	out.Events = append(out.Events, g.withDecision(&out, events)...)
	if err != nil {
		return g.storeDown(out, err)
	}
	out.Result = ResultReviewRevoked
	return out.redirect(Redirect, http.StatusSeeOther, PathReviews+"?notice=revoked")
}

// revokeUnused revokes every undecided item of c this user reviews that
// nobody used for UnusedFor.
func (g *Gate) revokeUnused(ctx context.Context, req *Request, out Outcome, in signedIn, store grants.Store, c *grants.Campaign, by string) Outcome {
	now := req.Start
	used, err := g.recentlyUsed(ctx, store, now)
	if err != nil {
		return g.storeDown(out, err)
	}
	why := "unused for 30 days"
	revoked := 0
	for i := range c.Items {
		it := &c.Items[i]
		if it.Decision != nil || used[usedKey(it.User, it.Resource)] || !g.mayReview(req, &out, in, c, it) {
			continue
		}
		decided, err := store.DecideReviewItem(ctx, c.ID, it.ID, grants.ItemDecision{Action: grants.ActionRevoke, By: by, At: now.Unix(), Reason: why})
		if errors.Is(err, grants.ErrAlreadyDecided) {
			continue
		}
		if err != nil {
			return g.storeDown(out, err)
		}
		events, err := g.revokeItem(ctx, c, decided, by, out.Audit.User, why, now)
		out.Events = append(out.Events, g.withDecision(&out, events)...)
		if err != nil {
			return g.storeDown(out, err)
		}
		revoked++
	}
	if revoked == 0 {
		return out.redirect(Redirect, http.StatusSeeOther, PathReviews+"?notice=nothing_unused")
	}
	out.Result = ResultReviewRevoked
	return out.redirect(Redirect, http.StatusSeeOther, PathReviews+"?notice=revoked_unused")
}

// reviewEvent is a review event caused by this request: the signed-in
// user is the actor.
func (g *Gate) reviewEvent(msg string, out *Outcome, c *grants.Campaign, it *grants.ReviewItem, why string) Event {
	e := ReviewEvent(msg, c, it, out.Audit.User, why)
	e.Fields = append(e.Fields, zap.String("decision_id", out.Audit.ID()))
	return e
}

// withDecision ties events to this request's decision line.
func (g *Gate) withDecision(out *Outcome, events []Event) []Event {
	for i := range events {
		events[i].Fields = append(events[i].Fields, zap.String("decision_id", out.Audit.ID()))
	}
	return events
}

// CheckReview checks a review's settings, saying what to fix.
func CheckReview(rc ReviewConfig) error {
	switch {
	case rc.Name == "" || !grants.UsageName(rc.Name) || strings.ContainsAny(rc.Name, " /"):
		return fmt.Errorf("review needs a name of printable characters without spaces, '/', '{', '}' or '|'")
	case rc.Every < time.Hour:
		return fmt.Errorf("review %s: every must be at least 1h, got %s", rc.Name, rc.Every)
	case len(rc.Reviewers) == 0:
		return fmt.Errorf("review %s: reviewers names no group", rc.Name)
	case rc.Scope != grants.ScopeStanding && rc.Scope != grants.ScopeGrants && rc.Scope != grants.ScopeAll:
		return fmt.Errorf("review %s: scope must be standing, grants or all, got %q", rc.Name, rc.Scope)
	case rc.OnTimeout != grants.ActionKeep && rc.OnTimeout != grants.ActionRevoke && rc.OnTimeout != grants.ActionFlag:
		return fmt.Errorf("review %s: on_timeout must be keep, revoke or flag, got %q", rc.Name, rc.OnTimeout)
	case rc.Duration <= 0 || rc.Duration > rc.Every:
		return fmt.Errorf("review %s: duration must be positive and at most every (%s), got %s", rc.Name, rc.Every, rc.Duration)
	}
	return nil
}
