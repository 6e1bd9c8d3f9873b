package gate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// StoreOp is one operation of the ops CLI on a grant store. The CLI runs
// it directly against Redis (or a file no process holds), or sends it to
// the admin API of the running Caddy that holds an embedded store.
type StoreOp struct {
	Op       string `json:"op"` // list-grants, add-grant, revoke-grant, deprovision, logout-user, list-requests, evidence
	Store    string `json:"store"`
	Email    string `json:"email,omitempty"`
	Sub      string `json:"sub,omitempty"`
	Iss      string `json:"iss,omitempty"`
	Resource string `json:"resource,omitempty"`
	App      string `json:"app,omitempty"`
	ID       string `json:"id,omitempty"`
	Duration string `json:"duration,omitempty"`
	Reason   string `json:"reason,omitempty"`
	By       string `json:"by,omitempty"`
	Status   string `json:"status,omitempty"`
	All      bool   `json:"all,omitempty"`
	// Since bounds the evidence export (Unix seconds).
	Since int64 `json:"since,omitempty"`
	// ReviewOp carries the access-review operations' own settings
	// (ops_reviews.go).
	ReviewOp *ReviewOp `json:"review_op,omitempty"`
}

// StoreOpResult is what an operation returns, and the audit events it
// caused (the caller logs them where it logs).
type StoreOpResult struct {
	Grants   []grants.Grant        `json:"grants,omitempty"`
	Requests []grants.Request      `json:"requests,omitempty"`
	Users    []grants.User         `json:"users,omitempty"`
	History  []grants.HistoryEntry `json:"history,omitempty"`
	Events   []Event               `json:"-"`

	// Campaigns, Revocations and Note are the access-review operations'
	// (ops_reviews.go).
	Campaigns   []grants.Campaign           `json:"campaigns,omitempty"`
	Revocations []grants.ResourceRevocation `json:"revocations,omitempty"`
	Note        string                      `json:"note,omitempty"`
}

// ErrUnknownEmail: no user the store knows has the email an operation
// names.
var ErrUnknownEmail = errors.New("unknown email")

// resolveUser finds the one user an operation names: by iss and sub, or
// by an email the store has seen.
func (o *StoreOp) resolveUser(ctx context.Context, s grants.Store) (grants.User, error) {
	if o.Sub != "" || o.Iss != "" {
		if o.Sub == "" || o.Iss == "" {
			return grants.User{}, errors.New("give both --sub and --iss")
		}
		return grants.User{Iss: o.Iss, Sub: o.Sub}, nil
	}
	if o.Email == "" {
		return grants.User{}, errors.New("name the user with --user EMAIL, or --sub and --iss")
	}
	// The store indexes emails in the form sessions hold them (domain in
	// lowercase), so the operator's spelling is normalised the same way.
	email, err := authn.ParseEmail(o.Email)
	if err != nil {
		return grants.User{}, fmt.Errorf("%q is not a plain email address (local@domain): give --sub and --iss", o.Email)
	}
	us, err := s.Users(ctx, email)
	if err != nil {
		return grants.User{}, err
	}
	switch len(us) {
	case 0:
		return grants.User{}, fmt.Errorf("%w: no user with the email %s is known to the store (a user is known by email once they have signed in, asked for access or been granted it): name the user with --iss and --sub", ErrUnknownEmail, o.Email)
	case 1:
		return us[0], nil
	}
	var names []string
	for _, u := range us {
		names = append(names, u.String())
	}
	return grants.User{}, fmt.Errorf("%s names several users (%s): give --sub and --iss", o.Email, strings.Join(names, ", "))
}

// run performs the operation. The result is never nil: its events are
// the audit lines to write, one for each change that happened, and, when
// the operation failed, a failure line with the error (never the event of
// an operation that did not happen).
func (o *StoreOp) Run(ctx context.Context, s grants.Store, now time.Time) (*StoreOpResult, error) {
	res := &StoreOpResult{}
	err := o.apply(ctx, s, now, res)
	if err != nil && o.Op != "list-grants" && o.Op != "list-requests" && o.Op != "list-reviews" {
		res.Events = append(res.Events, Event{Msg: o.Op + " failed", Failed: true, Fields: withActor(o.by(), o.Reason,
			zap.String("op", o.Op), zap.String("user", o.Sub), zap.String("iss", o.Iss), zap.String("email", o.Email),
			zap.String("grant_id", o.ID), zap.String("error", err.Error()))})
	}
	return res, err
}

func (o *StoreOp) by() string {
	if o.By == "" {
		return "cli"
	}
	return o.By
}

func (o *StoreOp) apply(ctx context.Context, s grants.Store, now time.Time, res *StoreOpResult) error {
	by := o.by()
	switch o.Op {
	case "list-grants":
		f := grants.GrantFilter{Resource: o.Resource, All: o.All, Now: now}
		if o.Email != "" || o.Sub != "" {
			u, err := o.resolveUser(ctx, s)
			if err != nil {
				return err
			}
			f.User = &u
		}
		gs, err := s.Grants(ctx, f)
		res.Grants = gs
		return err
	case "list-requests":
		rs, err := s.Requests(ctx, grants.RequestFilter{App: o.App, Status: grants.Status(o.Status)})
		res.Requests = rs
		return err
	case "evidence":
		hs, err := s.History(ctx, grants.HistoryFilter{Since: time.Unix(o.Since, 0), App: o.App})
		res.History = hs
		return err
	case "add-grant":
		u, err := o.resolveUser(ctx, s)
		if err != nil {
			return err
		}
		d, err := time.ParseDuration(o.Duration)
		if err != nil || d <= 0 {
			return fmt.Errorf("--duration %q: want a positive duration such as 4h", o.Duration)
		}
		if o.Resource == "" || o.Reason == "" {
			return errors.New("--resource and --reason are required")
		}
		g, err := s.AddGrant(ctx, grants.Grant{User: u, Email: o.Email, App: o.App, Resource: o.Resource, Reason: o.Reason,
			RequestedBy: by, ApprovedBy: by, CreatedAt: now.Unix(), ExpiresAt: now.Add(d).Unix()})
		if err != nil {
			return err
		}
		res.Grants = []grants.Grant{g}
		res.Events = append(res.Events, GrantEvent(EventGrantApproved, &g, by, "added by an operator"))
		return nil
	case "revoke-grant":
		if o.ID == "" {
			return errors.New("--id is required")
		}
		g, err := s.RevokeGrant(ctx, o.ID, by, now)
		if err != nil {
			return err
		}
		res.Grants = []grants.Grant{g}
		res.Events = append(res.Events, GrantEvent(EventGrantRevoked, &g, by, o.Reason))
		return nil
	case "deprovision":
		u, err := o.resolveUser(ctx, s)
		if err != nil {
			return err
		}
		res.Users = []grants.User{u}
		done, err := grants.Deprovision(ctx, s, u, by, now)
		res.Grants = done.Grants
		// What happened, line by line; the summary only when all of it did.
		if done.SessionsRevoked {
			res.Events = append(res.Events, UserEvent(EventUserLoggedOut, u, by, "user de-provisioned"))
		}
		for i := range done.Grants {
			res.Events = append(res.Events, GrantEvent(EventGrantRevoked, &done.Grants[i], by, "user de-provisioned"))
		}
		for i := range done.Rejected {
			res.Events = append(res.Events, RequestEvent(EventGrantRejected, &done.Rejected[i], by, "user de-provisioned"))
		}
		if err != nil {
			return err
		}
		res.Events = append(res.Events, UserEvent(EventUserDeprovisioned, u, by, o.Reason, zap.String("email", o.Email),
			zap.Int("grants_revoked", len(done.Grants)), zap.Int("requests_rejected", len(done.Rejected))))
		return nil
	case "logout-user":
		u, err := o.resolveUser(ctx, s)
		if err != nil {
			return err
		}
		res.Users = []grants.User{u}
		if err := s.RevokeUser(ctx, u, now); err != nil {
			return err
		}
		res.Events = append(res.Events, UserEvent(EventUserLoggedOut, u, by, o.Reason))
		return nil
	case "start-review", "list-reviews", "lift-revocation":
		return o.applyReview(ctx, s, now, res)
	}
	return fmt.Errorf("unknown operation %q", o.Op)
}

// Print writes the result as a table for people. A user is their
// subject and issuer (the identity), with the email they were seen with.
func (res *StoreOpResult) Print(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	if len(res.Grants) > 0 {
		fmt.Fprintln(tw, "ID\tSUB\tISSUER\tEMAIL\tRESOURCE\tSTATE\tEXPIRES\tAPPROVED BY\tREASON")
		for _, g := range res.Grants {
			state := "active"
			switch {
			case g.RevokedAt != 0:
				state = "revoked"
			case !g.Active(now):
				state = "expired"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.ID, g.User.Sub, g.User.Iss, orDash(g.Email), g.Resource, state,
				time.Unix(g.ExpiresAt, 0).UTC().Format(time.RFC3339), g.ApprovedBy, g.Reason)
		}
	}
	if len(res.Requests) > 0 {
		fmt.Fprintln(tw, "ID\tAPP\tSUB\tISSUER\tEMAIL\tRESOURCE\tDURATION\tSTATUS\tDECIDED BY\tREASON")
		for _, r := range res.Requests {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.App, r.User.Sub, r.User.Iss, orDash(r.Email), r.Resource,
				time.Duration(r.Duration)*time.Second, r.Status, r.DecidedBy, r.Reason)
		}
	}
	for _, u := range res.Users {
		fmt.Fprintf(tw, "user %s\n", u)
	}
	res.printReviews(tw)
	if len(res.Grants)+len(res.Requests)+len(res.Users)+len(res.Campaigns)+len(res.Revocations) == 0 {
		fmt.Fprintln(tw, "(none)")
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
