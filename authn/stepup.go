package authn

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Requirement is what a sensitive request needs of the session: an
// authentication at Provider ("" is the primary IdP) with one of ACR (any
// when empty), all of AMR, no older than MaxAge (any age when 0).
type Requirement struct {
	Provider string
	ACR      []string
	AMR      []string
	MaxAge   time.Duration
}

// ErrConflictingStepUp means requirements for one provider accept no acr
// in common: no login could ever satisfy them.
var ErrConflictingStepUp = errors.New("authn: step-up requirements accept no acr in common")

// Combine merges the requirements that apply to one request: per
// provider, the accepted acr sets intersect, the smallest max_age wins and
// the amr requirements unite. All of the results must hold.
func Combine(reqs ...Requirement) ([]Requirement, error) {
	byProvider := map[string]*Requirement{}
	var order []string
	for _, r := range reqs {
		c, ok := byProvider[r.Provider]
		if !ok {
			cp := Requirement{Provider: r.Provider, ACR: sortedUnique(r.ACR), AMR: sortedUnique(r.AMR), MaxAge: r.MaxAge}
			byProvider[r.Provider] = &cp
			order = append(order, r.Provider)
			continue
		}
		if len(r.ACR) > 0 {
			if len(c.ACR) == 0 {
				c.ACR = sortedUnique(r.ACR)
			} else {
				var both []string
				for _, a := range c.ACR {
					if slices.Contains(r.ACR, a) {
						both = append(both, a)
					}
				}
				if len(both) == 0 {
					return nil, fmt.Errorf("%w: %v and %v", ErrConflictingStepUp, c.ACR, r.ACR)
				}
				c.ACR = both
			}
		}
		c.AMR = sortedUnique(append(c.AMR, r.AMR...))
		if r.MaxAge > 0 && (c.MaxAge == 0 || r.MaxAge < c.MaxAge) {
			c.MaxAge = r.MaxAge
		}
	}
	out := make([]Requirement, 0, len(order))
	for _, p := range order {
		out = append(out, *byProvider[p])
	}
	return out, nil
}

func sortedUnique(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := append([]string(nil), ss...)
	sort.Strings(out)
	return slices.Compact(out)
}

// Verification is what a step-out to a second provider proved, kept in
// the session under the provider's name.
type Verification struct {
	ACR      string            `json:"acr,omitempty"`
	AMR      []string          `json:"amr,omitempty"`
	AuthTime int64             `json:"at"`
	Claims   map[string]string `json:"c,omitempty"` // only the claims the configuration lists
}

// authFacts are the facts a requirement is checked against.
type authFacts struct {
	acr      string
	amr      []string
	authTime int64
}

func (s *Session) facts(provider string) (authFacts, bool) {
	if provider == "" {
		return authFacts{s.ACR, s.AMR, s.AuthTime}, true
	}
	v, ok := s.Verifications[provider]
	return authFacts{v.ACR, v.AMR, v.AuthTime}, ok
}

// Unmet says why a session does not meet a requirement: "" when it does,
// else "verification" (never verified at that provider), "acr", "amr" or
// "max_age". A few seconds of clock skew between the IdP and this node
// count in the user's favour, never more.
func (r Requirement) Unmet(s *Session, now time.Time) string {
	f, ok := s.facts(r.Provider)
	if !ok {
		return "verification"
	}
	return r.check(f, now)
}

func (r Requirement) check(f authFacts, now time.Time) string {
	if len(r.ACR) > 0 && !slices.Contains(r.ACR, f.acr) {
		return "acr"
	}
	for _, m := range r.AMR {
		if !slices.Contains(f.amr, m) {
			return "amr"
		}
	}
	if r.MaxAge > 0 {
		// A time in the future would stay "fresh" past any max_age.
		at := time.Unix(f.authTime, 0)
		if f.authTime == 0 || now.Sub(at) > r.MaxAge+reauthSkew || at.After(now.Add(reauthSkew)) {
			return "max_age"
		}
	}
	return ""
}

// String describes the requirement for people and logs.
func (r Requirement) String() string {
	var parts []string
	if r.Provider != "" {
		parts = append(parts, "provider "+r.Provider)
	}
	if len(r.ACR) > 0 {
		parts = append(parts, "acr "+strings.Join(r.ACR, " or "))
	}
	if len(r.AMR) > 0 {
		parts = append(parts, "amr "+strings.Join(r.AMR, " and "))
	}
	if r.MaxAge > 0 {
		parts = append(parts, "within "+r.MaxAge.String())
	}
	return strings.Join(parts, ", ")
}

// AcceptStepUp checks what a step-up login returned against the
// requirement it was started for: an accepted acr, the required amr, and
// an authentication no earlier than the step-up started (less a few
// seconds of skew). A weaker or stale answer is refused, never looped on.
func AcceptStepUp(id *Identity, r Requirement, started, now time.Time) error {
	f := authFacts{id.ACR, id.AMR, id.AuthTime}
	switch r.check(f, now) {
	case "acr":
		return refuse("weaker_acr", fmt.Sprintf("The identity provider confirmed a weaker sign-in (%q) than this page needs (%s).", id.ACR, strings.Join(r.ACR, " or ")))
	case "amr":
		return refuse("missing_amr", fmt.Sprintf("The sign-in did not use the required methods (%s).", strings.Join(r.AMR, ", ")))
	case "max_age":
		return refuse("stale_auth_time", "The identity provider returned an old sign-in instead of a fresh one.")
	}
	if id.AuthTime == 0 || time.Unix(id.AuthTime, 0).Before(started.Add(-reauthSkew)) || time.Unix(id.AuthTime, 0).After(now.Add(reauthSkew)) {
		return refuse("stale_auth_time", "The identity provider returned an earlier sign-in instead of asking you again.")
	}
	return nil
}
