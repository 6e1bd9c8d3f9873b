package authn

import (
	"crypto/rand"
	"time"
)

// Session is what the session cookie holds: only what the pipeline needs.
// Short JSON names keep the cookie small; the cookie is sealed, so none of
// this is visible to the browser.
type Session struct {
	ID      string `json:"id"`
	Subject string `json:"sub"`
	// Issuer is the issuer of the IdP the user signed in with: a user is
	// Issuer + Subject. Sessions made before several IdPs were supported
	// have none; whoever opens the session fills it in from the IdP
	// whose keys opened it.
	Issuer string `json:"is,omitempty"`
	// IdP is the name of that IdP in the configuration. It is not sealed
	// into the cookie: the IdP whose keys open the session names it.
	IdP      string            `json:"-"`
	Email    string            `json:"em,omitempty"` // verified (or trusted) email only
	Name     string            `json:"nm,omitempty"`
	Groups   []string          `json:"gr,omitempty"`
	ACR      string            `json:"acr,omitempty"`
	AMR      []string          `json:"amr,omitempty"`
	AuthTime int64             `json:"at,omitempty"` // unix seconds of the user's last authentication at the IdP
	Created  int64             `json:"c"`            // unix seconds
	LastSeen int64             `json:"ls"`           // unix seconds of the last recorded activity
	Extra    map[string]string `json:"x,omitempty"`  // further claims named by identity headers
	// IdPSession is an opaque key of the IdP session the user signed in
	// through (from the ID token's sid claim), which a back-channel
	// logout ends; "" when the IdP names none.
	IdPSession string `json:"ips,omitempty"`
	// Verifications are step-outs to second providers, by provider name.
	Verifications map[string]Verification `json:"v,omitempty"`
	// Ended marks a tombstone written at logout: it opens, but is no
	// session. It makes the next login ask for the password again.
	Ended string `json:"end,omitempty"`
}

// NewSession starts a session for a verified identity.
func NewSession(id *Identity, now time.Time) *Session {
	return &Session{
		ID:       rand.Text(),
		Subject:  id.Subject,
		Issuer:   id.Issuer,
		Email:    id.Email,
		Name:     id.Name,
		Groups:   id.Groups,
		ACR:      id.ACR,
		AMR:      id.AMR,
		AuthTime: id.AuthTime,
		Created:  now.Unix(),
		LastSeen: now.Unix(),
		Extra:    id.Extra,
	}
}

// Reason says why a request has no valid session. The values appear in
// audit lines and API answers, so they are stable.
type Reason string

const (
	ReasonNone      Reason = ""                 // the session is valid
	ReasonNoCookie  Reason = "no_session"       // no session cookie
	ReasonInvalid   Reason = "invalid_cookie"   // unknown key, tampered, malformed or too old to open
	ReasonIdle      Reason = "idle_timeout"     // no activity for longer than the idle timeout
	ReasonLifetime  Reason = "session_lifetime" // older than the absolute session lifetime
	ReasonLoggedOut Reason = "logged_out"       // a logout tombstone
	ReasonClock     Reason = "clock_skew"       // created or last seen in the future
	ReasonRevoked   Reason = "revoked"          // logged out, logged out everywhere, or de-provisioned
	// ReasonEndedAtIdP: the session at the IdP that the user signed
	// in through has ended (a back-channel logout).
	ReasonEndedAtIdP Reason = "ended_at_idp"
	ReasonDuplicate  Reason = "duplicate_cookie" // a Gatehouse cookie name sent twice: one may shadow the other
	// ReasonUnverified: the node could not check the session against the
	// revocations in force (it has not loaded them yet).
	ReasonUnverified Reason = "revocations_unavailable"
)

// ForcesReauthentication reports whether the next login after this reason
// must make the user type their password again (prompt=login), so that the
// IdP's own single sign-on cannot silently undo a logout.
func (r Reason) ForcesReauthentication() bool {
	return r == ReasonIdle || r == ReasonLifetime || r == ReasonLoggedOut || r == ReasonRevoked || r == ReasonEndedAtIdP
}

// clockSkew is how far in the future a session's times may be before the
// session is refused; nodes' clocks are assumed to be synchronised to well
// within it.
const clockSkew = 30 * time.Second

// Lifetimes are the idle timeout and the absolute lifetime of sessions.
type Lifetimes struct {
	Idle     time.Duration
	Lifetime time.Duration
}

// Check returns why s is no longer a valid session at now, or ReasonNone.
func (l Lifetimes) Check(s *Session, now time.Time) Reason {
	if s.Ended != "" {
		return ReasonLoggedOut
	}
	n := now.Unix()
	skew := int64(clockSkew / time.Second)
	if s.Created > n+skew || s.LastSeen > n+skew || s.LastSeen < s.Created {
		return ReasonClock
	}
	if n-s.Created >= int64(l.Lifetime/time.Second) {
		return ReasonLifetime
	}
	if n-s.LastSeen >= int64(l.Idle/time.Second) {
		return ReasonIdle
	}
	return ReasonNone
}

// SlideEvery is how often the idle clock is written back to the cookie:
// once a minute, or a tenth of a shorter idle timeout. Sliding less often
// keeps Set-Cookie off almost every response; the cost is that a session
// may end up to that much earlier than idle_timeout after the last activity,
// never later.
func (l Lifetimes) SlideEvery() time.Duration {
	if every := l.Idle / 10; every < time.Minute {
		return max(every, time.Second)
	}
	return time.Minute
}

// ShouldSlide reports whether activity at now should re-issue the cookie
// with a new LastSeen.
func (l Lifetimes) ShouldSlide(s *Session, now time.Time) bool {
	return now.Unix()-s.LastSeen >= int64(l.SlideEvery()/time.Second)
}

// Expires is when the session can no longer be valid, whatever happens.
func (l Lifetimes) Expires(s *Session) time.Time {
	return time.Unix(s.Created, 0).Add(l.Lifetime)
}
