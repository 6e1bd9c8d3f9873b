package gate

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/grants"
)

// The ops CLI's access-review operations (docs/reviews.md):
//
//	start-review     open a campaign of a review now, for the period up to now
//	list-reviews     the app's campaigns with every item and decision (the export)
//	lift-revocation  give back standing access a review took away

// ReviewOp is what the review operations take besides StoreOp's App,
// Resource and user.
type ReviewOp struct {
	Review string `json:"review"`
	// Settings for start-review; each left empty is the review's latest
	// campaign's (the nodes open one when they start with the review).
	Every     string   `json:"every,omitempty"`
	Duration  string   `json:"duration,omitempty"`
	Reviewers []string `json:"reviewers,omitempty"`
	Scope     string   `json:"scope,omitempty"`
	OnTimeout string   `json:"on_timeout,omitempty"`
}

// IdPNote is what the export says of standing access.
const IdPNote = "Standing access comes from groups, which live in the IdP: a revoke here denies it in Gatehouse, and an admin must also remove the user from the group in the IdP."

// EventReviewLifted: an operator gave back standing access a review had
// taken away.
const EventReviewLifted = "access review revocation lifted"

func init() { Events = append(Events, EventReviewLifted) }

// applyReview runs a review operation.
func (o *StoreOp) applyReview(ctx context.Context, s grants.Store, now time.Time, res *StoreOpResult) error {
	if o.App == "" {
		return errors.New("--app is required")
	}
	switch o.Op {
	case "list-reviews":
		cs, err := s.Reviews(ctx, o.App, time.Time{})
		if o.ReviewOp != nil && o.ReviewOp.Review != "" {
			kept := cs[:0]
			for _, c := range cs {
				if c.Review == o.ReviewOp.Review {
					kept = append(kept, c)
				}
			}
			cs = kept
		}
		res.Campaigns, res.Note = cs, IdPNote
		return err
	case "start-review":
		if o.ReviewOp == nil || o.ReviewOp.Review == "" {
			return errors.New("--review is required")
		}
		rc, err := o.reviewConfig(ctx, s)
		if err != nil {
			return err
		}
		id := "manual-" + strings.ToLower(rand.Text())
		// Up to and including this second: a grant made in it is in.
		end := now.Truncate(time.Second).Add(time.Second)
		c, _, err := OpenCampaign(ctx, s, o.App, rc, id, end.Add(-rc.Every), end, now, o.by())
		if err != nil {
			return err
		}
		res.Campaigns, res.Note = []grants.Campaign{c}, IdPNote
		res.Events = append(res.Events, CampaignEvent(EventReviewOpened, &c, o.by()))
		return nil
	case "lift-revocation":
		u, err := o.resolveUser(ctx, s)
		if err != nil {
			return err
		}
		if o.Resource == "" {
			return errors.New("--resource is required")
		}
		rr, err := s.LiftResourceRevocation(ctx, u, o.App, o.Resource)
		if errors.Is(err, grants.ErrNotFound) {
			return fmt.Errorf("no access review revoked %s for %s in %s", o.Resource, u, o.App)
		}
		if err != nil && !errors.Is(err, grants.ErrNotDurable) {
			return err
		}
		res.Revocations = []grants.ResourceRevocation{rr}
		res.Events = append(res.Events, Event{Msg: EventReviewLifted, Fields: withActor(o.by(), o.Reason,
			zap.String("user", u.Sub), zap.String("iss", u.Iss), zap.String("email", rr.Email), zap.String("resource", rr.Resource),
			zap.String("campaign", rr.Campaign), zap.String("revoked_by", rr.By))})
		return err
	}
	return fmt.Errorf("unknown operation %q", o.Op)
}

// reviewConfig is the review to open a campaign of: the settings given,
// the rest from the review's latest campaign.
func (o *StoreOp) reviewConfig(ctx context.Context, s grants.Store) (ReviewConfig, error) {
	ro := o.ReviewOp
	rc := ReviewConfig{Name: ro.Review, Reviewers: ro.Reviewers, Scope: ro.Scope, OnTimeout: ro.OnTimeout}
	parse := func(flag, v string, dst *time.Duration) error {
		if v == "" {
			return nil
		}
		d, err := parseDays(v)
		if err != nil {
			return fmt.Errorf("--%s %q: want a duration such as 90d or 12h", flag, v)
		}
		*dst = d
		return nil
	}
	if err := errors.Join(parse("every", ro.Every, &rc.Every), parse("duration", ro.Duration, &rc.Duration)); err != nil {
		return rc, err
	}
	if rc.Every == 0 || rc.Duration == 0 || len(rc.Reviewers) == 0 || rc.Scope == "" || rc.OnTimeout == "" {
		cs, err := s.Reviews(ctx, o.App, time.Time{})
		if err != nil {
			return rc, err
		}
		var last *grants.Campaign
		for i := range cs {
			if cs[i].Review == ro.Review {
				last = &cs[i]
			}
		}
		if last == nil {
			return rc, fmt.Errorf("no campaign of review %s of app %s yet to take its settings from: start Gatehouse with the review configured (it opens one at once), or give --every, --duration, --reviewers, --scope and --on-timeout", ro.Review, o.App)
		}
		if rc.Every == 0 {
			rc.Every = time.Duration(last.PeriodEnd-last.PeriodStart) * time.Second
		}
		if rc.Duration == 0 {
			rc.Duration = time.Duration(last.EndsAt-last.OpenedAt) * time.Second
		}
		if len(rc.Reviewers) == 0 {
			rc.Reviewers = last.Reviewers
		}
		if rc.Scope == "" {
			rc.Scope = last.Scope
		}
		if rc.OnTimeout == "" {
			rc.OnTimeout = last.OnTimeout
		}
	}
	return rc, CheckReview(rc)
}

// parseDays reads a Go duration, or a number of days ("90d").
func parseDays(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err != nil || fmt.Sprint(days) != n || days <= 0 {
			return 0, errors.New("not a number of days")
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

// printReviews writes campaigns and resource revocations for people.
func (res *StoreOpResult) printReviews(w io.Writer) {
	for _, c := range res.Campaigns {
		fmt.Fprintf(w, "campaign %s\treview %s\tperiod %s to %s\tends %s\t%d items, %d undecided\n", c.ID, c.Review,
			time.Unix(c.PeriodStart, 0).UTC().Format(time.RFC3339), time.Unix(c.PeriodEnd, 0).UTC().Format(time.RFC3339),
			time.Unix(c.EndsAt, 0).UTC().Format(time.RFC3339), len(c.Items), c.Undecided())
		fmt.Fprintln(w, "ITEM\tSUB\tISSUER\tEMAIL\tRESOURCE\tSOURCE\tAPPROVED BY\tLAST USED\tCOUNT\tDECISION\tBY\tREASON")
		for _, it := range c.Items {
			last := "never"
			if it.LastUsed > 0 {
				last = time.Unix(it.LastUsed, 0).UTC().Format(time.RFC3339)
			}
			decision, by, why := "-", "-", "-"
			if d := it.Decision; d != nil {
				decision, by, why = d.Action, d.By, orDash(d.Reason)
				if d.Action == grants.ActionRevoke && !d.Applied {
					decision += " (not carried out yet)"
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", it.ID, it.User.Sub, it.User.Iss, orDash(it.Email), it.Resource,
				it.Source, orDash(it.ApprovedBy), last, it.Count, decision, by, why)
		}
	}
	for _, r := range res.Revocations {
		fmt.Fprintf(w, "lifted\t%s\t%s\t%s\t%s (revoked by %s)\n", r.User.Sub, r.User.Iss, r.App, r.Resource, orDash(r.By))
	}
	if res.Note != "" && len(res.Campaigns) > 0 {
		fmt.Fprintln(w, "note: "+res.Note)
	}
}
