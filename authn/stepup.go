package authn

import (
	"fmt"
	"strings"
	"time"
)

// Verification is what a step-out to a second provider proved, kept in
// the session under the provider's name.
type Verification struct {
	ACR      string            `json:"acr,omitempty"`
	AMR      []string          `json:"amr,omitempty"`
	AuthTime int64             `json:"at"`
	Claims   map[string]string `json:"c,omitempty"` // only the claims the configuration lists
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
