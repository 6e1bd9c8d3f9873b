package module

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// Review is an access review of the app (docs/reviews.md): at the start
// of every period a campaign opens that lists who had access in the
// period before (standing access through groups, seen in use; grants,
// with their approvers) and how they used it, for the reviewers to keep
// or revoke on /.gatehouse/reviews. Every node runs the schedule; the
// grant store opens each period's campaign once.
type Review struct {
	// Name names the review in the audit log, metrics and the CLI.
	// Required; letters, digits and punctuation, no spaces.
	Name string `json:"name,omitempty"`

	// Every is the period: a campaign opens at the start of each,
	// counted from 1970-01-01 UTC (24h opens at midnight UTC, 90d every
	// 90 days). Required; at least 1h.
	Every caddy.Duration `json:"every,omitempty"`

	// Reviewers are the groups whose members review. Required. Nobody
	// reviews their own access, and data.gatehouse.review may narrow who
	// reviews what.
	Reviewers []string `json:"reviewers,omitempty"`

	// Scope is what a campaign lists: "standing" (access through groups,
	// seen in use), "grants" (just-in-time grants) or "all" (default).
	Scope string `json:"scope,omitempty"`

	// OnTimeout is what happens to items nobody decided when a campaign
	// ends: "keep", "revoke" or "flag" (default: kept, and flagged in the
	// record).
	OnTimeout string `json:"on_timeout,omitempty"`

	// Duration is how long a campaign stays open. Default: 14d, or
	// every when that is shorter; at most every.
	Duration caddy.Duration `json:"duration,omitempty"`
}

// defaultReviewDuration is how long a campaign stays open by default.
const defaultReviewDuration = 14 * 24 * time.Hour

// setDefaults fills in a review's defaults.
func (r *Review) setDefaults() {
	if r.Scope == "" {
		r.Scope = grants.ScopeAll
	}
	if r.OnTimeout == "" {
		r.OnTimeout = grants.ActionFlag
	}
	if r.Duration == 0 {
		r.Duration = caddy.Duration(min(defaultReviewDuration, time.Duration(r.Every)))
	}
}

// gateReview is the review as the gate runs it.
func (r *Review) gateReview() gate.ReviewConfig {
	return gate.ReviewConfig{Name: r.Name, Every: time.Duration(r.Every), Reviewers: r.Reviewers, Scope: r.Scope,
		OnTimeout: r.OnTimeout, Duration: time.Duration(r.Duration)}
}

// validateReviews checks the reviews: each on its own, and one name once.
func (h *Handler) validateReviews(bad func(directive, format string, args ...any)) {
	seen := map[string]bool{}
	for _, r := range h.Reviews {
		if r == nil {
			bad("review", "an empty review")
			continue
		}
		if seen[r.Name] {
			bad("review", "%s is defined twice", r.Name)
		}
		seen[r.Name] = true
		if err := gate.CheckReview(r.gateReview()); err != nil {
			bad("review", "%v", err)
		}
	}
}

// reviewConfig gives the gate the reviews, where to write the events of
// their schedule, and the open-items metric.
func (h *Handler) reviewConfig(cfg *gate.Config) {
	for _, r := range h.Reviews {
		cfg.Reviews = append(cfg.Reviews, r.gateReview())
	}
	audit, app := h.auditLog, h.App
	cfg.OnEvent = func(e gate.Event) {
		writeEvents(audit, app, e)
		recordHistory(h.logger, h.store, app, []gate.Event{e}) // h.store is set before the gate starts
	}
	cfg.OnReviewItems = func(review string, n int) { metrics.reviewItems.WithLabelValues(app, review).Set(float64(n)) }
}

// unmarshalReview parses
//
//	review <name> {
//	    every      <duration>
//	    reviewers  <group...>
//	    scope      standing|grants|all
//	    on_timeout keep|revoke|flag
//	    duration   <duration>
//	}
func (h *Handler) unmarshalReview(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("review needs a name: review <name> { every 90d; reviewers <group...> }")
	}
	r := &Review{Name: d.Val()}
	if d.NextArg() {
		return d.Errf("review takes one name, then a block; got %q too", d.Val())
	}
	for _, o := range h.Reviews {
		if o.Name == r.Name {
			return d.Errf("review %s is defined twice", r.Name)
		}
	}
	what := "review " + r.Name
	err := eachSetting(d, what, "every, reviewers, scope, on_timeout, duration", func(sub string) error {
		switch sub {
		case "every":
			return durationArg(d, &r.Every)
		case "duration":
			return durationArg(d, &r.Duration)
		case "reviewers":
			return someArgs(d, &r.Reviewers)
		case "scope":
			if err := oneArg(d, &r.Scope); err != nil {
				return err
			}
			if r.Scope != grants.ScopeStanding && r.Scope != grants.ScopeGrants && r.Scope != grants.ScopeAll {
				return d.Errf("scope must be standing, grants or all, got %q", r.Scope)
			}
			return nil
		case "on_timeout":
			if err := oneArg(d, &r.OnTimeout); err != nil {
				return err
			}
			if r.OnTimeout != grants.ActionKeep && r.OnTimeout != grants.ActionRevoke && r.OnTimeout != grants.ActionFlag {
				return d.Errf("on_timeout must be keep, revoke or flag, got %q", r.OnTimeout)
			}
			return nil
		}
		return errUnknownSetting
	})
	if err != nil {
		return err
	}
	if r.Every == 0 || len(r.Reviewers) == 0 {
		return d.Errf("%s needs every and reviewers in its block", what)
	}
	h.Reviews = append(h.Reviews, r)
	return nil
}
