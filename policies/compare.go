package policies

import (
	"maps"
	"slices"
	"strings"
)

// Change is one way a candidate policy's decision differs from the
// serving one's for the same input. The values are stable: they label
// the gatehouse_policy_shadow_disagreements_total metric, and the shadow
// event lines and `gatehouse policy diff` name them.
type Change string

// The changes a candidate can make to a decision (docs/policy-changes.md).
const (
	// ChangeAllowToDeny: the serving policy allows, the candidate denies.
	ChangeAllowToDeny Change = "allow_to_deny"
	// ChangeDenyToAllow: the serving policy denies (or could not decide),
	// the candidate allows.
	ChangeDenyToAllow Change = "deny_to_allow"
	// Both allow, and the candidate asks for a step-up the serving
	// policy does not, no longer asks for one, or asks for another.
	ChangeStepUpAdded   Change = "step_up_added"
	ChangeStepUpRemoved Change = "step_up_removed"
	ChangeStepUpChanged Change = "step_up_changed"
	// ChangeHeadersChanged: both allow, with other policy headers (a
	// role the upstream trusts, say).
	ChangeHeadersChanged Change = "headers_changed"
	// ChangeReasonChanged: both deny, for another reason (or one denies
	// with policy_error and the other by its rules).
	ChangeReasonChanged Change = "reason_changed"
	// ChangeOfferChanged: both deny, offering another grant (or one
	// offers a grant and the other none).
	ChangeOfferChanged Change = "offer_changed"
	// ChangeCandidateError: the candidate could not decide (an error,
	// an undefined or ill-shaped decision, a timeout) where the serving
	// policy could.
	ChangeCandidateError Change = "candidate_error"
)

// Changes lists every Change, for documentation, metrics and tests.
var Changes = []Change{ChangeAllowToDeny, ChangeDenyToAllow, ChangeStepUpAdded, ChangeStepUpRemoved, ChangeStepUpChanged,
	ChangeHeadersChanged, ChangeReasonChanged, ChangeOfferChanged, ChangeCandidateError}

// Compare says how the candidate's decision for an input (or its error)
// differs from the serving one's: nothing when they agree. An error
// denies (policy_error), so a serving error against a candidate that
// allows is deny_to_allow; two errors agree. When allow and deny differ,
// that is the only change named: the rest follows from it.
func Compare(serving Decision, servingErr error, candidate Decision, candidateErr error) []Change {
	switch {
	case candidateErr != nil && servingErr != nil:
		return nil
	case candidateErr != nil:
		return []Change{ChangeCandidateError}
	case servingErr != nil && candidate.Allow:
		return []Change{ChangeDenyToAllow}
	case servingErr != nil:
		return []Change{ChangeReasonChanged}
	case serving.Allow && !candidate.Allow:
		return []Change{ChangeAllowToDeny}
	case !serving.Allow && candidate.Allow:
		return []Change{ChangeDenyToAllow}
	}
	var out []Change
	if serving.Allow {
		switch s, c := serving.StepUp, candidate.StepUp; {
		case s == nil && c != nil:
			out = append(out, ChangeStepUpAdded)
		case s != nil && c == nil:
			out = append(out, ChangeStepUpRemoved)
		case s != nil && !s.Equal(c):
			out = append(out, ChangeStepUpChanged)
		}
		if !maps.Equal(serving.Headers, candidate.Headers) {
			out = append(out, ChangeHeadersChanged)
		}
		return out
	}
	if serving.Reason != candidate.Reason {
		out = append(out, ChangeReasonChanged)
	}
	if s, c := serving.RequestGrant, candidate.RequestGrant; (s == nil) != (c == nil) || s != nil && *s != *c {
		out = append(out, ChangeOfferChanged)
	}
	return out
}

// Equal reports whether two step-ups ask for the same: the same acr and
// amr values (in any order) and max_age.
func (s *StepUp) Equal(o *StepUp) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.MaxAge == o.MaxAge && sameSet(s.ACR, o.ACR) && sameSet(s.AMR, o.AMR)
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// String describes a step-up for logs: "acr=a,b amr=otp max_age=5m0s",
// naming only what it asks for; "" for none.
func (s *StepUp) String() string {
	if s == nil {
		return ""
	}
	var parts []string
	if len(s.ACR) > 0 {
		parts = append(parts, "acr="+strings.Join(s.ACR, ","))
	}
	if len(s.AMR) > 0 {
		parts = append(parts, "amr="+strings.Join(s.AMR, ","))
	}
	if s.MaxAge > 0 {
		parts = append(parts, "max_age="+s.MaxAge.String())
	}
	return strings.Join(parts, " ")
}
