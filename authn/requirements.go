package authn

import (
	"errors"
	"fmt"
	"net/http"
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

// PathMatcher reports whether a request matches a list of configured
// path patterns. The request it is given carries the canonical path in
// URL.Path (see CanonicalPath). The Caddy module implements it with
// Caddy's path matcher, so that patterns mean what they mean elsewhere in
// a Caddyfile.
type PathMatcher interface {
	MatchPath(r *http.Request) bool
}

// StepUpRule is a configured step_up rule: requests whose canonical path
// Paths matches need Requirement.
type StepUpRule struct {
	Paths       PathMatcher
	Requirement Requirement
}

// StepUpRules are every configured rule of a site.
type StepUpRules []StepUpRule

// For lists, combined, what a request needs: the requirement of every
// rule its canonical path matches (r as PathMatcher takes it), and extra
// (a policy's obligation, a page's own requirement). Nil when nothing
// applies; an error when the requirements accept no acr in common.
func (rs StepUpRules) For(r *http.Request, extra ...Requirement) ([]Requirement, error) {
	var reqs []Requirement
	for _, rule := range rs {
		if rule.Paths.MatchPath(r) {
			reqs = append(reqs, rule.Requirement)
		}
	}
	reqs = append(reqs, extra...)
	if len(reqs) == 0 {
		return nil, nil
	}
	return Combine(reqs...)
}

// FirstUnmet returns the first requirement the session does not meet and
// why (see Requirement.Unmet); "" when it meets them all.
func FirstUnmet(reqs []Requirement, s *Session, now time.Time) (Requirement, string) {
	for _, r := range reqs {
		if why := r.Unmet(s, now); why != "" {
			return r, why
		}
	}
	return Requirement{}, ""
}

// PatternsMayOverlap reports whether some path could match a pattern of
// each list (Caddy path-matcher syntax). It is conservative: wildcard
// patterns are compared by their literal prefix. Configuration checks use
// it to refuse rules that can apply together but never be met together.
func PatternsMayOverlap(a, b []string) bool {
	prefix := func(p string) (string, bool) {
		if i := strings.IndexByte(p, '*'); i >= 0 {
			return strings.ToLower(p[:i]), true
		}
		return strings.ToLower(p), false
	}
	for _, x := range a {
		for _, y := range b {
			px, wx := prefix(x)
			py, wy := prefix(y)
			switch {
			case wx && wy:
				if strings.HasPrefix(px, py) || strings.HasPrefix(py, px) {
					return true
				}
			case wx:
				if strings.HasPrefix(py, px) {
					return true
				}
			case wy:
				if strings.HasPrefix(px, py) {
					return true
				}
			default:
				if px == py {
					return true
				}
			}
		}
	}
	return false
}
