package grants

import (
	"context"
	"errors"
	"time"
)

// Observer is told of every call a store answered: the operation's name
// (the Store method's, in snake case: lookup, add_grant, …), how long it
// took, and its error. It must be fast: it runs on the request path.
type Observer func(op string, took time.Duration, err error)

// Outage reports whether err means the store could not be reached or
// failed, rather than an answer about the data (not found, already
// decided, invalid).
func Outage(err error) bool {
	return err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrAlreadyDecided) && !errors.Is(err, ErrInvalid) &&
		!errors.Is(err, ErrConflict)
}

// Pinger is a store that can check it is reachable in one round trip.
// Stores in this process (memory, embedded file) are always reachable
// and need not implement it.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Observe wraps s so that o is told of every call. Events and Close pass
// through; Unwrap returns s.
func Observe(s Store, o Observer) Store { return &observed{s: s, o: o} }

type observed struct {
	s Store
	o Observer
}

// Unwrap returns the observed store.
func (w *observed) Unwrap() Store { return w.s }

// observe tells the observer of a call that started at start.
func (w *observed) observe(op string, start time.Time, err error) { w.o(op, time.Since(start), err) }

func (w *observed) Lookup(ctx context.Context, u User, sid string, now time.Time) (State, error) {
	start := time.Now()
	v, err := w.s.Lookup(ctx, u, sid, now)
	w.observe("lookup", start, err)
	return v, err
}

func (w *observed) AddGrant(ctx context.Context, g Grant) (Grant, error) {
	start := time.Now()
	v, err := w.s.AddGrant(ctx, g)
	w.observe("add_grant", start, err)
	return v, err
}

func (w *observed) RevokeGrant(ctx context.Context, id, by string, now time.Time) (Grant, error) {
	start := time.Now()
	v, err := w.s.RevokeGrant(ctx, id, by, now)
	w.observe("revoke_grant", start, err)
	return v, err
}

func (w *observed) Grants(ctx context.Context, f GrantFilter) ([]Grant, error) {
	start := time.Now()
	v, err := w.s.Grants(ctx, f)
	w.observe("grants", start, err)
	return v, err
}

func (w *observed) CreateRequest(ctx context.Context, r Request) (Request, error) {
	start := time.Now()
	v, err := w.s.CreateRequest(ctx, r)
	w.observe("create_request", start, err)
	return v, err
}

func (w *observed) Request(ctx context.Context, id string) (Request, error) {
	start := time.Now()
	v, err := w.s.Request(ctx, id)
	w.observe("request", start, err)
	return v, err
}

func (w *observed) Requests(ctx context.Context, f RequestFilter) ([]Request, error) {
	start := time.Now()
	v, err := w.s.Requests(ctx, f)
	w.observe("requests", start, err)
	return v, err
}

func (w *observed) Users(ctx context.Context, email string) ([]User, error) {
	start := time.Now()
	v, err := w.s.Users(ctx, email)
	w.observe("users", start, err)
	return v, err
}

func (w *observed) Revocations(ctx context.Context, now time.Time) (Revocations, error) {
	start := time.Now()
	v, err := w.s.Revocations(ctx, now)
	w.observe("revocations", start, err)
	return v, err
}

func (w *observed) Decide(ctx context.Context, id string, d Decision) (Request, *Grant, error) {
	start := time.Now()
	r, g, err := w.s.Decide(ctx, id, d)
	w.observe("decide", start, err)
	return r, g, err
}

func (w *observed) RevokeSession(ctx context.Context, u User, sid string, until time.Time) error {
	start := time.Now()
	err := w.s.RevokeSession(ctx, u, sid, until)
	w.observe("revoke_session", start, err)
	return err
}

func (w *observed) RevokeUser(ctx context.Context, u User, at time.Time) error {
	start := time.Now()
	err := w.s.RevokeUser(ctx, u, at)
	w.observe("revoke_user", start, err)
	return err
}

func (w *observed) RevokeIdPSession(ctx context.Context, is IdPSession, until time.Time) error {
	start := time.Now()
	err := w.s.RevokeIdPSession(ctx, is, until)
	w.observe("revoke_idp_session", start, err)
	return err
}

func (w *observed) FirstUse(ctx context.Context, id string, now, until time.Time) (bool, error) {
	start := time.Now()
	v, err := w.s.FirstUse(ctx, id, now, until)
	w.observe("first_use", start, err)
	return v, err
}

func (w *observed) NoteEmail(ctx context.Context, u User, email string) error {
	start := time.Now()
	err := w.s.NoteEmail(ctx, u, email)
	w.observe("note_email", start, err)
	return err
}

func (w *observed) Restore(ctx context.Context, rv Revocations) error {
	start := time.Now()
	err := w.s.Restore(ctx, rv)
	w.observe("restore", start, err)
	return err
}

func (w *observed) PutPending(ctx context.Context, key string, sealed []byte, now time.Time, ttl time.Duration) error {
	start := time.Now()
	err := w.s.PutPending(ctx, key, sealed, now, ttl)
	w.observe("put_pending", start, err)
	return err
}

func (w *observed) TakePending(ctx context.Context, key string, now time.Time) ([]byte, error) {
	start := time.Now()
	v, err := w.s.TakePending(ctx, key, now)
	w.observe("take_pending", start, err)
	return v, err
}

func (w *observed) PutSCIMUser(ctx context.Context, u SCIMUser, now time.Time) (SCIMUser, error) {
	start := time.Now()
	v, err := w.s.PutSCIMUser(ctx, u, now)
	w.observe("put_scim_user", start, err)
	return v, err
}

func (w *observed) SCIMUser(ctx context.Context, id string) (SCIMUser, error) {
	start := time.Now()
	v, err := w.s.SCIMUser(ctx, id)
	w.observe("scim_user", start, err)
	return v, err
}

func (w *observed) SCIMUsers(ctx context.Context, f SCIMFilter) ([]SCIMUser, error) {
	start := time.Now()
	v, err := w.s.SCIMUsers(ctx, f)
	w.observe("scim_users", start, err)
	return v, err
}

func (w *observed) DeleteSCIMUser(ctx context.Context, id string, now time.Time) (SCIMUser, error) {
	start := time.Now()
	v, err := w.s.DeleteSCIMUser(ctx, id, now)
	w.observe("delete_scim_user", start, err)
	return v, err
}

func (w *observed) AddUsage(ctx context.Context, us []Usage) error {
	start := time.Now()
	err := w.s.AddUsage(ctx, us)
	w.observe("add_usage", start, err)
	return err
}

func (w *observed) Usage(ctx context.Context, app string, from, to time.Time) ([]Usage, error) {
	start := time.Now()
	v, err := w.s.Usage(ctx, app, from, to)
	w.observe("usage", start, err)
	return v, err
}

func (w *observed) OpenReview(ctx context.Context, c Campaign) (Campaign, bool, error) {
	start := time.Now()
	v, opened, err := w.s.OpenReview(ctx, c)
	w.observe("open_review", start, err)
	return v, opened, err
}

func (w *observed) Review(ctx context.Context, id string) (Campaign, error) {
	start := time.Now()
	v, err := w.s.Review(ctx, id)
	w.observe("review", start, err)
	return v, err
}

func (w *observed) Reviews(ctx context.Context, app string, since time.Time) ([]Campaign, error) {
	start := time.Now()
	v, err := w.s.Reviews(ctx, app, since)
	w.observe("reviews", start, err)
	return v, err
}

func (w *observed) DecideReviewItem(ctx context.Context, campaign, item string, d ItemDecision) (ReviewItem, error) {
	start := time.Now()
	v, err := w.s.DecideReviewItem(ctx, campaign, item, d)
	w.observe("decide_review_item", start, err)
	return v, err
}

func (w *observed) ReviewItemApplied(ctx context.Context, campaign, item string) error {
	start := time.Now()
	err := w.s.ReviewItemApplied(ctx, campaign, item)
	w.observe("review_item_applied", start, err)
	return err
}

func (w *observed) RevokeResource(ctx context.Context, r ResourceRevocation) error {
	start := time.Now()
	err := w.s.RevokeResource(ctx, r)
	w.observe("revoke_resource", start, err)
	return err
}

func (w *observed) LiftResourceRevocation(ctx context.Context, u User, app, resource string) (ResourceRevocation, error) {
	start := time.Now()
	v, err := w.s.LiftResourceRevocation(ctx, u, app, resource)
	w.observe("lift_resource_revocation", start, err)
	return v, err
}

func (w *observed) ResourceRevocations(ctx context.Context) ([]ResourceRevocation, error) {
	start := time.Now()
	v, err := w.s.ResourceRevocations(ctx)
	w.observe("resource_revocations", start, err)
	return v, err
}

// Ping checks the observed store, if it can be checked.
func (w *observed) Ping(ctx context.Context) error {
	p, ok := w.s.(Pinger)
	if !ok {
		return nil
	}
	start := time.Now()
	err := p.Ping(ctx)
	w.observe("ping", start, err)
	return err
}

func (w *observed) Events() <-chan Event { return w.s.Events() }
func (w *observed) Close() error         { return w.s.Close() }

// Interface guards.
var (
	_ Store  = (*observed)(nil)
	_ Pinger = (*observed)(nil)
	_ Pinger = (*RedisStore)(nil)
)
