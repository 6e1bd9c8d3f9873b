package grants

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Access reviews: a campaign lists, for one app, who had access to what
// in a period (standing access through groups, or a grant), with its
// usage; reviewers keep or revoke each item. A campaign is opened once
// (OpenReview: of any number of nodes opening the same id, one wins),
// each item is decided once (DecideReviewItem), and a revoked standing
// entitlement is kept as a resource revocation that every node mirrors
// and the policy input exposes (input.revoked_resources).

// Scopes of a review: what its campaigns list.
const (
	ScopeStanding = "standing" // access through groups (derived from usage not through a grant)
	ScopeGrants   = "grants"   // just-in-time grants
	ScopeAll      = "all"
)

// Actions on a review item. ActionFlag is what on_timeout flag leaves on
// an item nobody decided: kept, and marked for the record.
const (
	ActionKeep   = "keep"
	ActionRevoke = "revoke"
	ActionFlag   = "flag"
)

// ReviewRetention is how long a campaign and its decisions are kept
// after it ended: the evidence of a yearly audit.
const ReviewRetention = 400 * 24 * time.Hour

// Campaign is one access review of one app for one period.
type Campaign struct {
	ID     string `json:"id"`
	App    string `json:"app"`
	Review string `json:"review"` // the review's name in the configuration
	// Scope, OnTimeout and Reviewers (groups) are the review's settings
	// when the campaign opened.
	Scope     string   `json:"scope"`
	OnTimeout string   `json:"on_timeout"`
	Reviewers []string `json:"reviewers"`
	// PeriodStart..PeriodEnd (unix seconds, end excluded) is the period
	// whose access and usage the campaign lists.
	PeriodStart int64        `json:"period_start"`
	PeriodEnd   int64        `json:"period_end"`
	OpenedAt    int64        `json:"opened_at"`
	EndsAt      int64        `json:"ends_at"` // then on_timeout applies to undecided items
	OpenedBy    string       `json:"opened_by"`
	Items       []ReviewItem `json:"items"`
}

// Ended reports whether the campaign's time is over at now.
func (c *Campaign) Ended(now time.Time) bool { return now.Unix() >= c.EndsAt }

// Item returns the item with id, or nil.
func (c *Campaign) Item(id string) *ReviewItem {
	for i := range c.Items {
		if c.Items[i].ID == id {
			return &c.Items[i]
		}
	}
	return nil
}

// Undecided counts the items nobody decided yet.
func (c *Campaign) Undecided() int {
	n := 0
	for i := range c.Items {
		if c.Items[i].Decision == nil {
			n++
		}
	}
	return n
}

// ReviewItem is one user's access to one resource in a campaign.
type ReviewItem struct {
	ID       string `json:"id"`
	User     User   `json:"user"`
	Email    string `json:"email,omitempty"`
	Resource string `json:"resource"`
	// Source is ViaStanding (groups) or ViaGrant (GrantID, approved by
	// ApprovedBy, until GrantExpiresAt).
	Source         string `json:"source"`
	GrantID        string `json:"grant_id,omitempty"`
	ApprovedBy     string `json:"approved_by,omitempty"`
	GrantExpiresAt int64  `json:"grant_expires_at,omitempty"`
	// LastUsed (unix seconds, 0: never) and Count are the usage in the
	// period.
	LastUsed int64 `json:"last_used,omitempty"`
	Count    int64 `json:"count"`
	// Decision is nil until someone (or the timeout) decides the item.
	Decision *ItemDecision `json:"decision,omitempty"`
}

// ItemDecision is what was decided about an item.
type ItemDecision struct {
	Action string `json:"action"` // keep, revoke, flag
	By     string `json:"by"`     // the reviewer, or "timeout"
	At     int64  `json:"at"`
	Reason string `json:"reason,omitempty"`
	// Applied: a revoke was carried out (the grant ended, or the resource
	// revoked). A revoke decided but not applied (the store failed in
	// between) is applied again by the nodes' review schedule.
	Applied bool `json:"applied,omitempty"`
}

// ResourceRevocation is standing access an access review revoked: the
// user's access to the app's resource, until lifted. A grant for the
// resource approved after At lifts it while the grant lasts (the gate
// leaves it out of the policy input then).
type ResourceRevocation struct {
	User     User   `json:"user"`
	Email    string `json:"email,omitempty"`
	App      string `json:"app"`
	Resource string `json:"resource"`
	At       int64  `json:"at"`
	By       string `json:"by,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Campaign string `json:"campaign,omitempty"`
}

// key names the revocation within the store: one per user, app and
// resource.
func (r *ResourceRevocation) key() string {
	return r.User.Key() + "|" + r.App + "|" + r.Resource
}

// ReviewStore keeps campaigns, their decisions and resource revocations.
type ReviewStore interface {
	// OpenReview stores the campaign c under c.ID, exactly once: of any
	// number of calls with one id, on any node, one stores it and gets
	// true; the others get the stored campaign and false.
	OpenReview(ctx context.Context, c Campaign) (Campaign, bool, error)
	// Review returns the campaign with its decisions (ErrNotFound).
	Review(ctx context.Context, id string) (Campaign, error)
	// Reviews lists an app's campaigns opened at or after since (the
	// zero time: all), oldest first, with their decisions.
	Reviews(ctx context.Context, app string, since time.Time) ([]Campaign, error)
	// DecideReviewItem records the decision of one item exactly once:
	// of concurrent calls one wins, the others get ErrAlreadyDecided
	// (an unknown campaign or item is ErrNotFound).
	DecideReviewItem(ctx context.Context, campaign, item string, d ItemDecision) (ReviewItem, error)
	// ReviewItemApplied marks an item's revoke carried out.
	ReviewItemApplied(ctx context.Context, campaign, item string) error
	// RevokeResource records a resource revocation (replacing one of the
	// same user, app and resource), acknowledged once durable.
	RevokeResource(ctx context.Context, r ResourceRevocation) error
	// LiftResourceRevocation removes one, returning it (ErrNotFound).
	LiftResourceRevocation(ctx context.Context, u User, app, resource string) (ResourceRevocation, error)
	// ResourceRevocations lists every resource revocation, for the
	// nodes' mirrors.
	ResourceRevocations(ctx context.Context) ([]ResourceRevocation, error)
}

// CampaignID is the id of the campaign a schedule opens for a review of
// an app in the period starting at periodStart: the same on every node,
// so that one of them opens it.
func CampaignID(app, review string, periodStart int64) string {
	h := sha256.Sum256([]byte("review\x00" + app + "\x00" + review + "\x00" + strconv.FormatInt(periodStart, 10)))
	return hex.EncodeToString(h[:10])
}

// ReviewItemID is an item's id within its campaign.
func ReviewItemID(u User, resource, source, grantID string) string {
	h := sha256.Sum256([]byte(u.Key() + "\x00" + resource + "\x00" + source + "\x00" + grantID))
	return hex.EncodeToString(h[:8])
}

func validateCampaign(c *Campaign) error {
	switch {
	case c.ID == "" || !validPendingKey(c.ID):
		return fmt.Errorf("%w: a campaign needs an id of letters, digits, - and _", ErrInvalid)
	case !UsageName(c.App) || c.Review == "":
		return fmt.Errorf("%w: a campaign needs an app and a review", ErrInvalid)
	case c.Scope != ScopeStanding && c.Scope != ScopeGrants && c.Scope != ScopeAll:
		return fmt.Errorf("%w: a campaign's scope is standing, grants or all, not %q", ErrInvalid, c.Scope)
	case c.OnTimeout != ActionKeep && c.OnTimeout != ActionRevoke && c.OnTimeout != ActionFlag:
		return fmt.Errorf("%w: a campaign's on_timeout is keep, revoke or flag, not %q", ErrInvalid, c.OnTimeout)
	case c.PeriodEnd <= c.PeriodStart || c.EndsAt <= c.OpenedAt:
		return fmt.Errorf("%w: a campaign needs a period and a duration", ErrInvalid)
	}
	seen := map[string]bool{}
	for i := range c.Items {
		it := &c.Items[i]
		if it.ID == "" || seen[it.ID] || !it.User.valid() || it.Resource == "" || (it.Source != ViaStanding && it.Source != ViaGrant) {
			return fmt.Errorf("%w: campaign item %d: an id (once), a user, a resource and a source", ErrInvalid, i)
		}
		seen[it.ID] = true
		it.Decision = nil
	}
	if c.Reviewers == nil {
		c.Reviewers = []string{}
	}
	return nil
}

func validateItemDecision(d *ItemDecision) error {
	if d.Action != ActionKeep && d.Action != ActionRevoke && d.Action != ActionFlag || d.By == "" || d.At <= 0 {
		return fmt.Errorf("%w: a decision is keep, revoke or flag, by someone, at a time", ErrInvalid)
	}
	d.Applied = false
	return nil
}

func validateResourceRevocation(r *ResourceRevocation) error {
	if !r.User.valid() || !UsageName(r.App) || !UsageName(r.Resource) || r.At <= 0 {
		return fmt.Errorf("%w: a resource revocation needs a user, an app, a resource and a time", ErrInvalid)
	}
	return nil
}

// withDecisions fills in the campaign's decisions from raw (item id →
// ItemDecision JSON).
func withDecisions(c *Campaign, raw map[string][]byte) {
	for i := range c.Items {
		if b, ok := raw[c.Items[i].ID]; ok {
			var d ItemDecision
			if json.Unmarshal(b, &d) == nil {
				c.Items[i].Decision = &d
			}
		}
	}
}

func sortCampaigns(cs []Campaign) {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].OpenedAt != cs[j].OpenedAt {
			return cs[i].OpenedAt < cs[j].OpenedAt
		}
		return cs[i].ID < cs[j].ID
	})
}

// The embedded stores: buckets of campaigns (id → Campaign), decisions
// (campaign id/item id → ItemDecision) and resource revocations
// (key → ResourceRevocation).

func (s *kvStore) OpenReview(_ context.Context, c Campaign) (Campaign, bool, error) {
	if err := validateCampaign(&c); err != nil {
		return c, false, err
	}
	var stored Campaign
	opened := false
	err := s.db.update(func(tx kvTx) error {
		if tx.get(bReviews, c.ID) != nil {
			var err error
			stored, err = readCampaign(tx, c.ID)
			return err
		}
		opened, stored = true, c
		b, _ := json.Marshal(c)
		return tx.put(bReviews, c.ID, b)
	})
	if err != nil {
		return c, false, err
	}
	return stored, opened, nil
}

// readCampaign reads a campaign and its decisions in tx.
func readCampaign(tx kvTx, id string) (Campaign, error) {
	var c Campaign
	b := tx.get(bReviews, id)
	if b == nil {
		return c, ErrNotFound
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, err
	}
	raw := map[string][]byte{}
	err := tx.scan(bReviewDecisions, id+"/", func(k string, v []byte) error {
		raw[k[len(id)+1:]] = v
		return nil
	})
	withDecisions(&c, raw)
	return c, err
}

func (s *kvStore) Review(_ context.Context, id string) (Campaign, error) {
	var c Campaign
	err := s.db.view(func(tx kvTx) error {
		var err error
		c, err = readCampaign(tx, id)
		return err
	})
	return c, err
}

func (s *kvStore) Reviews(_ context.Context, app string, since time.Time) ([]Campaign, error) {
	out := []Campaign{}
	err := s.db.view(func(tx kvTx) error {
		var ids []string
		if err := tx.scan(bReviews, "", func(k string, b []byte) error {
			var head struct {
				App      string `json:"app"`
				OpenedAt int64  `json:"opened_at"`
			}
			if json.Unmarshal(b, &head) == nil && head.App == app && (since.IsZero() || head.OpenedAt >= since.Unix()) {
				ids = append(ids, k)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, id := range ids {
			c, err := readCampaign(tx, id)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	sortCampaigns(out)
	return out, err
}

func (s *kvStore) DecideReviewItem(_ context.Context, campaign, item string, d ItemDecision) (ReviewItem, error) {
	if err := validateItemDecision(&d); err != nil {
		return ReviewItem{}, err
	}
	var it ReviewItem
	err := s.db.update(func(tx kvTx) error {
		c, err := readCampaign(tx, campaign)
		if err != nil {
			return err
		}
		p := c.Item(item)
		if p == nil {
			return ErrNotFound
		}
		it = *p
		if it.Decision != nil {
			return ErrAlreadyDecided
		}
		b, _ := json.Marshal(d)
		it.Decision = &d
		return tx.put(bReviewDecisions, campaign+"/"+item, b)
	})
	return it, err
}

func (s *kvStore) ReviewItemApplied(_ context.Context, campaign, item string) error {
	return s.db.update(func(tx kvTx) error {
		b := tx.get(bReviewDecisions, campaign+"/"+item)
		if b == nil {
			return ErrNotFound
		}
		var d ItemDecision
		if err := json.Unmarshal(b, &d); err != nil {
			return err
		}
		d.Applied = true
		nb, _ := json.Marshal(d)
		return tx.put(bReviewDecisions, campaign+"/"+item, nb)
	})
}

func (s *kvStore) RevokeResource(_ context.Context, r ResourceRevocation) error {
	if err := validateResourceRevocation(&r); err != nil {
		return err
	}
	b, _ := json.Marshal(r)
	err := s.db.update(func(tx kvTx) error { return tx.put(bResourceRevs, r.key(), b) })
	if err == nil {
		s.events.send(Event{Kind: "resources", UserKey: r.User.Key()})
	}
	return err
}

func (s *kvStore) LiftResourceRevocation(_ context.Context, u User, app, resource string) (ResourceRevocation, error) {
	r := ResourceRevocation{User: u, App: app, Resource: resource}
	err := s.db.update(func(tx kvTx) error {
		b := tx.get(bResourceRevs, r.key())
		if b == nil {
			return ErrNotFound
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		return tx.del(bResourceRevs, r.key())
	})
	if err == nil {
		s.events.send(Event{Kind: "resources", UserKey: u.Key()})
	}
	return r, err
}

func (s *kvStore) ResourceRevocations(_ context.Context) ([]ResourceRevocation, error) {
	out := []ResourceRevocation{}
	err := s.db.view(func(tx kvTx) error {
		return tx.scan(bResourceRevs, "", func(_ string, b []byte) error {
			var r ResourceRevocation
			if json.Unmarshal(b, &r) == nil {
				out = append(out, r)
			}
			return nil
		})
	})
	sortResourceRevocations(out)
	return out, err
}

func sortResourceRevocations(rs []ResourceRevocation) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].key() < rs[j].key() })
}

// reviewPast reports whether a campaign ended more than ReviewRetention
// before now.
func reviewPast(now time.Time) func(string, []byte) bool {
	cutoff := now.Add(-ReviewRetention).Unix()
	return func(_ string, b []byte) bool {
		var head struct {
			EndsAt int64 `json:"ends_at"`
		}
		return json.Unmarshal(b, &head) != nil || head.EndsAt < cutoff
	}
}

// deleteReview forgets a campaign and its decisions.
func deleteReview(tx kvTx, id string) error {
	var decisions []string
	err := tx.scan(bReviewDecisions, id+"/", func(k string, _ []byte) error {
		decisions = append(decisions, k)
		return nil
	})
	for _, k := range decisions {
		err = errors.Join(err, tx.del(bReviewDecisions, k))
	}
	return errors.Join(err, tx.del(bReviews, id))
}

// resourceRevocationsByUser groups revocations by user key, each user's
// sorted by app and resource.
func resourceRevocationsByUser(rs []ResourceRevocation) map[string][]ResourceRevocation {
	out := make(map[string][]ResourceRevocation, len(rs))
	for _, r := range rs {
		uk := r.User.Key()
		out[uk] = append(out[uk], r)
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool {
			return strings.Compare(l[i].App+"\x00"+l[i].Resource, l[j].App+"\x00"+l[j].Resource) < 0
		})
	}
	return out
}
