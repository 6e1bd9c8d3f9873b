package authn

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// LoginSlots is how many logins one browser may have in progress at once.
// Each pending login lives in a cookie slot chosen at random; a newer login
// that lands in an occupied slot replaces the older one there. The newest
// login always has its cookie, and Gatehouse's cookies in a browser stay
// bounded however many tabs start a login (unbounded per-login cookies
// would grow the Cookie header until the server refuses it with 431).
const LoginSlots = 3

// maxHintReturn bounds the return path carried in the state parameter;
// a longer one returns to "/".
const maxHintReturn = 1024

// PendingLogins keeps the logins a browser has in progress: each login's
// state, nonce and PKCE verifier are sealed in a cookie slot
// (<prefix>0 … <prefix>2, path /.gatehouse/), and the state parameter sent
// to the IdP is the login's id followed by a sealed hint: where the login
// returns to and whether it was a step-up. The hint is what lets a login
// whose slot a newer login took restart cleanly at the callback instead of
// failing.
type PendingLogins struct {
	states *Sealer
	hints  *Sealer
	prefix string
}

// NewPendingLogins keeps logins in cookies named prefix+slot, sealed by
// states; hints are sealed by hints (a sealer of its own purpose).
func NewPendingLogins(states, hints *Sealer, prefix string) *PendingLogins {
	return &PendingLogins{states: states, hints: hints, prefix: prefix}
}

// loginHint travels, sealed, in the state parameter.
type loginHint struct {
	ID      string `json:"i"`
	Return  string `json:"r"`
	StepUp  bool   `json:"s,omitempty"`
	IdP     string `json:"p,omitempty"` // the IdP it went to, so a restart goes there again
	Started int64  `json:"t"`           // unix seconds
}

// Start seals st into its slot. It returns the cookie to set (name and
// value) and the state parameter to send to the IdP.
func (p *PendingLogins) Start(st *LoginState) (name, value, state string, err error) {
	ret := st.Return
	if len(ret) > maxHintReturn {
		ret = "/"
	}
	hint, err := p.hints.Seal(hintName, loginHint{ID: st.State, Return: ret, StepUp: st.StepUp != nil, IdP: st.IdP, Started: st.Started})
	if err != nil {
		return "", "", "", err
	}
	name = p.slotCookie(st.State)
	if value, err = p.states.Seal(name, st); err != nil {
		return "", "", "", err
	}
	return name, value, st.State + "." + hint, nil
}

const hintName = "login-hint"

func (p *PendingLogins) slotCookie(id string) string {
	return p.prefix + strconv.Itoa(int(id[0])%LoginSlots)
}

// LoginLookup says what the callback found for its state parameter.
type LoginLookup int

const (
	// LoginFound: this browser started the login and it is pending.
	LoginFound LoginLookup = iota
	// LoginSuperseded: this browser started the login, but a newer login
	// took its slot. Restart it (the returned state has Return, StepUp and
	// IdP set): the user lands where they were going, at worst after one more
	// trip to the IdP.
	LoginSuperseded
	// LoginUnknown: no login of this browser matches (another browser's
	// callback, cookies blocked or cleared, an expired or spent login).
	LoginUnknown
	// LoginMalformed: the state parameter is not one Gatehouse made.
	LoginMalformed
	// LoginSpent: this login already came back once (a replay).
	LoginSpent
)

var loginIDRE = regexp.MustCompile(`^[A-Z2-7]{26}$`)

// Find looks up the login a callback's state parameter names, returning
// its state with Return (and, for a step-up, StepUp) filled in, and the
// name of its slot cookie (to spend it).
func (p *PendingLogins) Find(r *http.Request, state string) (*LoginState, string, LoginLookup) {
	id, sealed, ok := strings.Cut(state, ".")
	if !ok || !loginIDRE.MatchString(id) || len(sealed) > MaxCookieLen {
		return nil, "", LoginMalformed
	}
	var hint loginHint
	if err := p.hints.Open(hintName, sealed, &hint); err != nil || hint.ID != id {
		return nil, "", LoginMalformed
	}
	name := p.slotCookie(id)
	c, err := r.Cookie(name)
	if err != nil {
		return nil, name, LoginUnknown
	}
	var st LoginState
	if err := p.states.Open(name, c.Value, &st); err != nil {
		return nil, name, LoginUnknown
	}
	if st.State == id && st.Spent {
		return nil, name, LoginSpent
	}
	if st.State != id {
		if st.Started < hint.Started {
			// An older login holds the slot: this one was never here
			// (another browser's callback).
			return nil, name, LoginUnknown
		}
		// A newer login of this browser took the slot. Restart.
		return &LoginState{State: id, Return: SafeReturnPath(hint.Return), StepUp: stepUpMark(hint.StepUp), IdP: hint.IdP}, name, LoginSuperseded
	}
	st.Return = SafeReturnPath(hint.Return)
	return &st, name, LoginFound
}

// Spend marks st's slot as used: the cookie to set keeps only the
// login's id and start, so that a replay of its callback is recognised
// and an older login superseded by it can still restart.
func (p *PendingLogins) Spend(st *LoginState) (name, value string, err error) {
	name = p.slotCookie(st.State)
	value, err = p.states.Seal(name, &LoginState{State: st.State, Started: st.Started, Spent: true})
	return name, value, err
}

// stepUpMark marks a restarted login as a step-up.
func stepUpMark(stepUp bool) *StepUpState {
	if !stepUp {
		return nil
	}
	return &StepUpState{}
}
