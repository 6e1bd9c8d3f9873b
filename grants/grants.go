// Package grants keeps just-in-time grants, access requests and session
// revocations for Gatehouse: a Store interface with an embedded store
// (bbolt file, or memory) and a Redis store that pass one conformance
// suite, and a Cache that every node puts in front of its store.
//
// Validity is always decided here by comparing expires_at with the time
// given, never only by a store's own expiry of keys.
package grants

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors.
var (
	ErrNotFound       = errors.New("grants: not found")
	ErrAlreadyDecided = errors.New("grants: request already decided")
	ErrInvalid        = errors.New("grants: invalid")
	ErrUnavailable    = errors.New("grants: store unavailable")
	ErrUnsupportedURL = errors.New("grants: unsupported store URL")
	ErrStoreLocked    = errors.New("grants: store file is locked by another process")
	// ErrNotDurable: a revocation was written on the Redis master, but its
	// replicas did not confirm it in time, so a failover now could lose
	// it. The operation is reported failed; running it again is safe.
	ErrNotDurable = errors.New("grants: the revocation is not confirmed by the store's replicas")
	// ErrNotReady: the node has not loaded the revocations in force yet,
	// so it cannot tell a revoked session from a live one.
	ErrNotReady = errors.New("grants: revocations not loaded yet")
)

// User is who a grant is for: an issuer and a subject (an email is not an
// identity: it can be reassigned).
type User struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
}

// Key is a stable, opaque key for the user, safe in store keys.
func (u User) Key() string {
	h := sha256.Sum256([]byte(u.Iss + "\x00" + u.Sub))
	return hex.EncodeToString(h[:16])
}

func (u User) String() string { return u.Sub + " (" + u.Iss + ")" }

func (u User) valid() bool { return u.Iss != "" && u.Sub != "" }

// IdPSession is a session at an identity provider: its issuer, and the
// session id (the ID token's sid claim) it gave the sign-ins made in it.
// OpenID Connect Back-Channel Logout ends one.
type IdPSession struct {
	Iss string
	SID string
}

// Key is a stable, opaque key for the IdP session: safe in store keys,
// and short enough for the session cookie that records it.
func (s IdPSession) Key() string {
	h := sha256.Sum256([]byte("idp-session\x00" + s.Iss + "\x00" + s.SID))
	return hex.EncodeToString(h[:16])
}

// onceKey is the store's key for a one-time id (FirstUse): fixed length
// whatever the id.
func onceKey(id string) string {
	h := sha256.Sum256([]byte("once\x00" + id))
	return hex.EncodeToString(h[:16])
}

// Grant is time-boxed access of one user to one resource.
type Grant struct {
	ID          string `json:"id"`
	User        User   `json:"user"`
	Email       string `json:"email,omitempty"`
	App         string `json:"app,omitempty"`
	Resource    string `json:"resource"`
	Reason      string `json:"reason,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
	ApprovedBy  string `json:"approved_by,omitempty"`
	RequestID   string `json:"request_id,omitempty"`
	CreatedAt   int64  `json:"created_at"`
	ExpiresAt   int64  `json:"expires_at"`
	RevokedAt   int64  `json:"revoked_at,omitempty"`
	RevokedBy   string `json:"revoked_by,omitempty"`
}

// Active reports whether the grant is valid at now: not revoked, and
// now < expires_at.
func (g *Grant) Active(now time.Time) bool {
	return g.RevokedAt == 0 && now.Unix() < g.ExpiresAt
}

// keptUntil is when a store may forget the grant (unix seconds):
// retention after it ended, by expiry or by revocation, whichever came
// first. Until then it is listed (GrantFilter.All, an access review).
func (g *Grant) keptUntil() int64 {
	end := g.ExpiresAt
	if g.RevokedAt != 0 && g.RevokedAt < end {
		end = g.RevokedAt
	}
	return end + int64(retention/time.Second)
}

// Status of an access request.
type Status string

const (
	Pending      Status = "pending"
	Approved     Status = "approved"
	AutoApproved Status = "auto_approved"
	Rejected     Status = "rejected"
)

// Request is a user's request for temporary access.
type Request struct {
	ID             string `json:"id"`
	App            string `json:"app"`
	Resource       string `json:"resource"`
	Reason         string `json:"reason"`
	User           User   `json:"user"`
	Email          string `json:"email,omitempty"`
	Name           string `json:"name,omitempty"`
	Duration       int64  `json:"duration_s"`     // asked for
	MaxDuration    int64  `json:"max_duration_s"` // the offer's cap
	CreatedAt      int64  `json:"created_at"`
	Status         Status `json:"status"`
	DecidedAt      int64  `json:"decided_at,omitempty"`
	DecidedBy      string `json:"decided_by,omitempty"`
	DecisionReason string `json:"decision_reason,omitempty"`
	GrantID        string `json:"grant_id,omitempty"`
}

// Decision decides a pending request.
type Decision struct {
	Approve bool
	Auto    bool   // approved by policy, at once
	By      string // who decided
	Reason  string
	// MaxDuration caps the grant further (the approver's policy answer);
	// 0 leaves the request's own cap.
	MaxDuration time.Duration
	Now         time.Time
}

// State is what the pipeline needs about a user on every request.
type State struct {
	// Grants active at the time asked.
	Grants []Grant
	// UserRevokedAt: sessions created at or before this (unix seconds)
	// are revoked (de-provisioning, log out everywhere). 0: none.
	UserRevokedAt int64
	// SessionRevoked: the session asked about was revoked (logout).
	SessionRevoked bool
	// Expired are the user's grants that expired (not revoked) within the
	// last day: a user coming back after one is audited as "expired on use".
	Expired []Grant
}

// recentlyExpired is how far back Lookup reports expired grants.
const recentlyExpired = 24 * time.Hour

// classify puts a grant into the state as active or recently expired.
func (s *State) classify(g Grant, now time.Time) {
	switch {
	case g.Active(now):
		s.Grants = append(s.Grants, g)
	case g.RevokedAt == 0 && now.Sub(time.Unix(g.ExpiresAt, 0)) < recentlyExpired:
		s.Expired = append(s.Expired, g)
	}
}

// Revoked reports whether a session created at created is revoked.
func (s *State) Revoked(created int64) bool {
	return s.SessionRevoked || (s.UserRevokedAt != 0 && created <= s.UserRevokedAt)
}

// GrantFilter selects grants to list.
type GrantFilter struct {
	User     *User
	Resource string
	// All includes expired and revoked grants (an access review).
	All bool
	Now time.Time
}

// RequestFilter selects requests to list.
type RequestFilter struct {
	App    string
	Status Status
	User   *User
}

// Revocations are every revocation still in force, for a node's local
// mirror.
type Revocations struct {
	Sessions map[string]int64           // user key + "/" + session id → until (unix)
	Users    map[string]int64           // user key → revoked at (unix)
	Grants   map[string]GrantRevocation // grant id → the revocation
	// IdPSessions are IdP sessions ended by a back-channel logout: every
	// session signed in through one is revoked.
	IdPSessions map[string]int64 // IdPSession.Key → until (unix)
}

// GrantRevocation is a revoked grant, in force until the grant would have
// expired.
type GrantRevocation struct {
	UserKey string `json:"user"`
	Until   int64  `json:"until"` // the grant's expires_at (unix)
	At      int64  `json:"at"`    // when it was revoked (unix)
	By      string `json:"by,omitempty"`
}

// newRevocations returns empty maps to fill.
func newRevocations() Revocations {
	return Revocations{Sessions: map[string]int64{}, Users: map[string]int64{}, Grants: map[string]GrantRevocation{},
		IdPSessions: map[string]int64{}}
}

// Event tells caches that something about a user changed.
type Event struct {
	Kind      string `json:"kind"` // "user", "session_revoked", "user_revoked", "grant_revoked", "idp_session_revoked", "resources", "resync", "heartbeat"
	UserKey   string `json:"user,omitempty"`
	SessionID string `json:"sid,omitempty"` // a session id; for idp_session_revoked, the IdPSession.Key
	GrantID   string `json:"gid,omitempty"`
	At        int64  `json:"at,omitempty"` // until (session, grant), revoked at (user), sent at (heartbeat, Unix ns)
	// Node and Via name a heartbeat's sender (a random id per store) and,
	// on a Cluster, the master it was published on.
	Node string `json:"node,omitempty"`
	Via  string `json:"via,omitempty"`
}

// Store keeps grants, requests and revocations. Implementations are safe
// for concurrent use. Times are passed in, so that expiry is decided by
// the caller's clock and tests are exact.
type Store interface {
	UsageStore  // usage.go
	ReviewStore // reviews.go

	// Lookup returns the user's active grants and revocation state, in one
	// round trip where the store is remote.
	Lookup(ctx context.Context, u User, sessionID string, now time.Time) (State, error)

	// AddGrant writes g at the time g.CreatedAt, and forgets the user's
	// grants that are past retention at that time (keptUntil): a user's
	// grants never pile up, whatever the store.
	AddGrant(ctx context.Context, g Grant) (Grant, error)
	RevokeGrant(ctx context.Context, id, by string, now time.Time) (Grant, error)
	Grants(ctx context.Context, f GrantFilter) ([]Grant, error)

	CreateRequest(ctx context.Context, r Request) (Request, error)
	Request(ctx context.Context, id string) (Request, error)
	Requests(ctx context.Context, f RequestFilter) ([]Request, error)
	// Decide decides a pending request exactly once: of concurrent calls,
	// one wins; the others get ErrAlreadyDecided. An approval creates the
	// grant.
	Decide(ctx context.Context, id string, d Decision) (Request, *Grant, error)

	// RevokeSession revokes one session of u until until (its end).
	RevokeSession(ctx context.Context, u User, sessionID string, until time.Time) error
	// RevokeUser revokes every session of u created up to at.
	RevokeUser(ctx context.Context, u User, at time.Time) error
	// RevokeIdPSession revokes, until until, every session signed in
	// through the IdP session s (a back-channel logout). Nodes enforce it
	// from their mirror of revocations (Cache.IdPSessionRevoked).
	RevokeIdPSession(ctx context.Context, s IdPSession, until time.Time) error
	// FirstUse records that the one-time id was used, until until, and
	// reports whether it was unused at now: of any number of calls with
	// one id, on any node, exactly one gets true while the record lasts.
	// It refuses a replayed logout token (its jti).
	FirstUse(ctx context.Context, id string, now, until time.Time) (bool, error)
	// Users resolves an email to the users the store has seen with it:
	// at sign-in (NoteEmail), on a grant or an access request.
	Users(ctx context.Context, email string) ([]User, error)
	// NoteEmail records that u signed in with email (verified), so that
	// operators can name u by email (Users).
	NoteEmail(ctx context.Context, u User, email string) error
	// Revocations lists revocations in force at now.
	Revocations(ctx context.Context, now time.Time) (Revocations, error)
	// Restore writes back revocations a node's mirror holds and the
	// store lost (a Redis failover can lose the last writes): idempotent,
	// and it never undoes anything.
	Restore(ctx context.Context, rv Revocations) error

	// PutPending keeps sealed (a value the caller sealed; the store never
	// reads it) under key for ttl from now, replacing any value there:
	// one key, so one Redis Cluster slot.
	PutPending(ctx context.Context, key string, sealed []byte, now time.Time, ttl time.Duration) error
	// TakePending returns the value kept under key and deletes it, in one
	// step: of two takes, at most one gets it. A value missing, already
	// taken, or expired at now is ErrNotFound.
	TakePending(ctx context.Context, key string, now time.Time) ([]byte, error)

	// AppendHistory keeps e as evidence, and forgets entries older than
	// keep (the history directive) at the same time.
	AppendHistory(ctx context.Context, e HistoryEntry, keep time.Duration) error
	// History lists kept entries, oldest first.
	History(ctx context.Context, f HistoryFilter) ([]HistoryEntry, error)
	// PutSCIMUser records a user of the HR or IAM provisioning system
	// (SCIM) at now: without an id a new one (the store assigns it),
	// else a replacement of that user (ErrNotFound if there is none, or
	// it was deleted). A userName is unique, ignoring case, among users
	// not deleted (ErrConflict); a deleted user's is taken over, and the
	// deleted user forgotten. It returns the user as stored: id, created,
	// modified and version set.
	PutSCIMUser(ctx context.Context, u SCIMUser, now time.Time) (SCIMUser, error)
	// SCIMUser returns one SCIM user, deleted or not (ErrNotFound).
	SCIMUser(ctx context.Context, id string) (SCIMUser, error)
	// SCIMUsers lists the SCIM users f selects, deleted ones too, in the
	// order they were created.
	SCIMUsers(ctx context.Context, f SCIMFilter) ([]SCIMUser, error)
	// DeleteSCIMUser marks a SCIM user deleted (and not active) at now;
	// the record stays until a new user takes its userName. ErrNotFound
	// if there is none, or it was deleted already.
	DeleteSCIMUser(ctx context.Context, id string, now time.Time) (SCIMUser, error)

	// Events delivers changes made by any node (for cache invalidation).
	Events() <-chan Event
	Close() error
}

// Deprovisioned is what Deprovision did, also when it failed part way:
// only what is listed here happened.
type Deprovisioned struct {
	SessionsRevoked bool      // every session of the user is revoked
	Grants          []Grant   // grants revoked
	Rejected        []Request // pending requests rejected
}

// Deprovision revokes everything of a user at once: every session, every
// grant, and every pending request (rejected). It stops at the first
// failure; the result says what was done before it. A revocation written
// but not confirmed by the store's replicas (ErrNotDurable) is done, and
// the others still follow: the error is returned at the end.
func Deprovision(ctx context.Context, s Store, u User, by string, now time.Time) (Deprovisioned, error) {
	var done Deprovisioned
	var notDurable error
	applied := func(err error) bool {
		if errors.Is(err, ErrNotDurable) {
			notDurable = err
			return true
		}
		return err == nil
	}
	if err := s.RevokeUser(ctx, u, now); !applied(err) {
		return done, err
	}
	done.SessionsRevoked = true
	gs, err := s.Grants(ctx, GrantFilter{User: &u, Now: now})
	if err != nil {
		return done, err
	}
	for _, g := range gs {
		r, err := s.RevokeGrant(ctx, g.ID, by, now)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if !applied(err) {
			return done, err
		}
		done.Grants = append(done.Grants, r)
	}
	reqs, err := s.Requests(ctx, RequestFilter{Status: Pending, User: &u})
	if err != nil {
		return done, err
	}
	for _, r := range reqs {
		dr, _, err := s.Decide(ctx, r.ID, Decision{By: by, Reason: "user de-provisioned", Now: now})
		if errors.Is(err, ErrAlreadyDecided) {
			continue
		}
		if err != nil {
			return done, err
		}
		done.Rejected = append(done.Rejected, dr)
	}
	return done, notDurable
}

func newID() string { return strings.ToLower(rand.Text()) }

// validateGrant checks a new grant and fills in its id.
func validateGrant(g *Grant) error {
	switch {
	case !g.User.valid():
		return fmt.Errorf("%w: grant needs a user (iss and sub)", ErrInvalid)
	case g.Resource == "":
		return fmt.Errorf("%w: grant needs a resource", ErrInvalid)
	case g.ExpiresAt <= g.CreatedAt:
		return fmt.Errorf("%w: grant must expire after it is created", ErrInvalid)
	}
	if g.ID == "" {
		g.ID = newID()
	}
	g.Email = strings.ToLower(g.Email)
	return nil
}

// validateOnce checks FirstUse's arguments.
func validateOnce(id string, now, until time.Time) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: a one-time id is needed", ErrInvalid)
	case !until.After(now):
		return fmt.Errorf("%w: a one-time id must be kept until a time after now", ErrInvalid)
	}
	return nil
}

// validIdPSession checks an IdP session to revoke.
func validIdPSession(s IdPSession) error {
	if s.Iss == "" || s.SID == "" {
		return fmt.Errorf("%w: an IdP session needs an issuer and a session id", ErrInvalid)
	}
	return nil
}

func validateRequest(r *Request) error {
	switch {
	case !r.User.valid():
		return fmt.Errorf("%w: request needs a user", ErrInvalid)
	case r.Resource == "":
		return fmt.Errorf("%w: request needs a resource", ErrInvalid)
	case r.Duration <= 0 || r.MaxDuration <= 0 || r.Duration > r.MaxDuration:
		return fmt.Errorf("%w: duration must be positive and at most the offered %ds", ErrInvalid, r.MaxDuration)
	}
	if r.ID == "" {
		r.ID = newID()
	}
	r.Status = Pending
	r.Email = strings.ToLower(r.Email)
	return nil
}

// decide applies a decision to a pending request, returning the grant an
// approval creates.
func decide(r *Request, d Decision) *Grant {
	r.DecidedAt, r.DecidedBy, r.DecisionReason = d.Now.Unix(), d.By, d.Reason
	if !d.Approve {
		r.Status = Rejected
		return nil
	}
	r.Status = Approved
	if d.Auto {
		r.Status = AutoApproved
	}
	dur := r.Duration
	if r.MaxDuration > 0 && dur > r.MaxDuration {
		dur = r.MaxDuration
	}
	if max := int64(d.MaxDuration / time.Second); max > 0 && dur > max {
		dur = max
	}
	g := &Grant{
		ID: newID(), User: r.User, Email: r.Email, App: r.App, Resource: r.Resource, Reason: r.Reason,
		RequestedBy: r.Email, ApprovedBy: d.By, RequestID: r.ID,
		CreatedAt: d.Now.Unix(), ExpiresAt: d.Now.Unix() + dur,
	}
	if g.RequestedBy == "" {
		g.RequestedBy = r.User.Sub
	}
	r.GrantID = g.ID
	return g
}

// retention is how long decided requests, expired grants and expired
// revocations are kept before purging (and pending requests after they
// were made).
const retention = 30 * 24 * time.Hour
