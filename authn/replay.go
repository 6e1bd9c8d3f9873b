package authn

import (
	"sync"
	"time"
)

// UsedStates remembers the login states that completed, until they would
// have expired anyway, so a replayed callback is refused even when it
// brings the login cookie along. Only successful logins are recorded, so a
// flood of started logins cannot fill it.
type UsedStates struct {
	mu   sync.Mutex
	seen map[string]int64 // state → unix expiry
}

// NewUsedStates returns an empty set.
func NewUsedStates() *UsedStates {
	return &UsedStates{seen: make(map[string]int64)}
}

// Seen reports whether state already completed a login.
func (u *UsedStates) Seen(state string, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	exp, ok := u.seen[state]
	return ok && exp > now.Unix()
}

// Mark records that state completed a login; it is remembered until
// started+LoginTTL.
func (u *UsedStates) Mark(state string, started, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) >= 1024 {
		for s, exp := range u.seen {
			if exp <= now.Unix() {
				delete(u.seen, s)
			}
		}
	}
	u.seen[state] = started.Add(LoginTTL).Unix()
}
