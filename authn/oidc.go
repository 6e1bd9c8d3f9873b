package authn

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// RelyingParty runs the authorization code flow with PKCE (S256), state and
// nonce against one client registration, and turns a verified ID token into
// an Identity.
type RelyingParty struct {
	Discovery    *Discovery
	HTTPClient   *http.Client
	ClientID     string
	ClientSecret string
	Scopes       []string
	// GroupsClaim names the claim holding the user's groups; a dotted path
	// ("realm_access.roles") reaches into nested objects.
	GroupsClaim string
	// ExtraClaims are further claims kept in the session (for identity
	// headers), looked up like GroupsClaim.
	ExtraClaims []string
	// TrustUnverifiedEmail uses the email claim even when email_verified is
	// not true. Only for IdPs that verify every address they issue.
	TrustUnverifiedEmail bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	verifier atomic.Pointer[oidc.IDTokenVerifier]
}

// AuthOptions shape one authorization request.
type AuthOptions struct {
	// ForceLogin sends prompt=login: the user must authenticate again,
	// whatever single sign-on session the IdP holds.
	ForceLogin bool
	// MaxAge is sent as max_age: the IdP must authenticate the user again
	// if their last authentication is older.
	MaxAge time.Duration
	// ACRValues is sent as acr_values: the authentication contexts asked
	// for, in order of preference. IdPs may treat it as a hint: the
	// returned acr is always checked.
	ACRValues []string
	// LoginHint is sent as login_hint: the email the user gave, so that
	// the IdP need not ask for it again. A hint only: the ID token's
	// claims are what count.
	LoginHint string
}

// LoginState is what a login in progress must remember between the
// redirect to the IdP and the callback. It travels in a sealed,
// short-lived cookie slot (see PendingLogins), so parallel logins in a
// few tabs do not disturb each other.
type LoginState struct {
	State       string `json:"s"` // the login's id
	Nonce       string `json:"n"`
	Verifier    string `json:"v"`
	RedirectURI string `json:"r"`
	// IdP names the IdP the sign-in was sent to (for a step-up at a
	// second provider, StepUp.Provider names it): the callback accepts an
	// answer from that IdP only, and exchanges the code with its client.
	IdP string `json:"ip,omitempty"`
	// Return is where the login returns to. It travels sealed in the
	// state parameter, not in the cookie, which keeps the slots small.
	Return     string `json:"-"`
	ForceLogin bool   `json:"fl,omitempty"`
	MaxAge     int64  `json:"ma,omitempty"` // seconds
	Started    int64  `json:"t"`            // unix seconds
	// StepUp is set when this login upgrades an existing session.
	StepUp *StepUpState `json:"su,omitempty"`
	// Spent marks a login whose callback already came (see
	// PendingLogins.Spend).
	Spent bool `json:"x,omitempty"`
}

// StepUpState is what a step-up login must prove, and for which session.
type StepUpState struct {
	Provider string   `json:"p,omitempty"`
	ACR      []string `json:"a,omitempty"`
	AMR      []string `json:"m,omitempty"`
	MaxAge   int64    `json:"ma,omitempty"` // seconds
	Session  string   `json:"sid"`
}

// Requirement is the requirement the step-up was started for.
func (s *StepUpState) Requirement() Requirement {
	return Requirement{Provider: s.Provider, ACR: s.ACR, AMR: s.AMR, MaxAge: time.Duration(s.MaxAge) * time.Second}
}

// Identity is a user as a verified ID token describes them.
type Identity struct {
	Issuer   string
	Subject  string
	Email    string // only when verified, or trusted by configuration
	Name     string
	Groups   []string
	ACR      string
	AMR      []string
	AuthTime int64
	Extra    map[string]string
	// SID is the IdP session the user signed in through (the sid
	// claim), which a back-channel logout names; "" when the IdP sent
	// none.
	SID string
	// RawIDToken is kept for logout (id_token_hint) only.
	RawIDToken string
	// Refused lists the claims left out because their values were not
	// acceptable ("email: not a single plain address"), for the audit
	// log. It never holds a value.
	Refused []string
}

// LoginError is a login refused for a reason worth auditing. Reason is a
// stable code; the message is safe to show users.
type LoginError struct {
	Reason string
	Msg    string
	// IdP is what the IdP's token endpoint said when it refused the
	// code, for the operator (audit and log); nil for other refusals.
	IdP *TokenError
}

// TokenError is the IdP's refusal at its token endpoint (RFC 6749
// 5.2): its HTTP status, its error code and description, cleaned for
// the log (a code that is not a plain token is left out; a description
// is cut to 200 bytes and left out if it holds control characters).
// It never holds the authorization code or a secret: the IdP's answer
// is about them, not a copy of them.
type TokenError struct {
	Status      int
	Code        string
	Description string
}

// tokenErrorCodeRE is the form of an error code the log repeats.
var tokenErrorCodeRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// newTokenError reads the IdP's refusal from the token endpoint's answer.
func newTokenError(re *oauth2.RetrieveError) *TokenError {
	te := &TokenError{Status: re.Response.StatusCode}
	if tokenErrorCodeRE.MatchString(re.ErrorCode) {
		te.Code = re.ErrorCode
	}
	d := re.ErrorDescription
	if len(d) > 200 {
		d = strings.ToValidUTF8(d[:200], "")
	}
	if cleanText(d) == nil {
		te.Description = d
	}
	return te
}

func (e *LoginError) Error() string { return "authn: login refused: " + e.Reason + ": " + e.Msg }

func refuse(reason, msg string) error { return &LoginError{Reason: reason, Msg: msg} }

// Skews tolerated between this node's clock and the IdP's: an ID token
// may have been issued up to iatSkew before its login started (the IdP
// signed the user in from an earlier page), and no time it states may be
// more than reauthSkew in the future.
const (
	iatSkew      = 60 * time.Second
	reauthSkew   = 5 * time.Second
	stateMaxAge  = 10 * time.Minute
	maxTokenSize = 16 << 10
)

// LoginTTL is how long a started login may take before its state expires.
const LoginTTL = stateMaxAge

func (rp *RelyingParty) now() time.Time {
	if rp.Now != nil {
		return rp.Now()
	}
	return time.Now()
}

func (rp *RelyingParty) oauth2Config(m *Metadata, redirectURI string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     rp.ClientID,
		ClientSecret: rp.ClientSecret,
		Endpoint:     m.Provider.Endpoint(),
		RedirectURL:  redirectURI,
		Scopes:       rp.Scopes,
	}
}

// Begin starts a login: it checks that the IdP can be reached and returns
// a fresh login state (id, nonce, PKCE verifier) to keep until the
// callback. AuthCodeURL then gives the URL to send the browser to.
func (rp *RelyingParty) Begin(ctx context.Context, redirectURI, returnTo string, opt AuthOptions) (*LoginState, error) {
	if _, err := rp.Discovery.Get(ctx); err != nil {
		return nil, err
	}
	if err := rp.Discovery.Reachable(ctx); err != nil {
		return nil, err
	}
	return &LoginState{
		State:       rand.Text(),
		Nonce:       rand.Text(),
		Verifier:    oauth2.GenerateVerifier(),
		RedirectURI: redirectURI,
		Return:      SafeReturnPath(returnTo),
		ForceLogin:  opt.ForceLogin,
		MaxAge:      int64(opt.MaxAge / time.Second),
		Started:     rp.now().Unix(),
	}, nil
}

// AuthCodeURL is the IdP authorization URL for a login begun with opt,
// with state as its state parameter (the login's id, and whatever the
// caller adds to it).
func (rp *RelyingParty) AuthCodeURL(ctx context.Context, st *LoginState, state string, opt AuthOptions) (string, error) {
	m, err := rp.Discovery.Get(ctx)
	if err != nil {
		return "", err
	}
	opts := []oauth2.AuthCodeOption{
		oauth2.S256ChallengeOption(st.Verifier),
		oidc.Nonce(st.Nonce),
	}
	if st.MaxAge > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.FormatInt(st.MaxAge, 10)))
	}
	if st.ForceLogin {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login"))
	}
	if len(opt.ACRValues) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("acr_values", strings.Join(opt.ACRValues, " ")))
	}
	if opt.LoginHint != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", opt.LoginHint))
	}
	return rp.oauth2Config(m, st.RedirectURI).AuthCodeURL(state, opts...), nil
}

// Finish completes a login: it exchanges code (with the PKCE verifier) and
// verifies the ID token fully: signature and algorithm, iss, aud, azp, exp,
// iat, nonce, and auth_time where a fresh login was demanded.
func (rp *RelyingParty) Finish(ctx context.Context, code string, st *LoginState) (*Identity, error) {
	m, err := rp.Discovery.Get(ctx)
	if err != nil {
		return nil, err
	}
	now := rp.now()
	if now.Sub(time.Unix(st.Started, 0)) > stateMaxAge {
		return nil, refuse("state_expired", "The login took too long. Please try again.")
	}
	ctx = oidc.ClientContext(ctx, rp.HTTPClient)
	tok, err := rp.oauth2Config(m, st.RedirectURI).Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return nil, &LoginError{Reason: "code_rejected", Msg: "The identity provider did not accept this login. Please try again.",
				IdP: newTokenError(re)}
		}
		return nil, fmt.Errorf("%w: token exchange: %v", ErrProviderUnavailable, err)
	}
	rp.Discovery.markOK()
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, refuse("no_id_token", "The identity provider returned no ID token.")
	}
	if len(raw) > maxTokenSize {
		return nil, refuse("id_token_too_large", "The identity provider returned an oversized ID token.")
	}
	idt, err := rp.idTokenVerifier(m).Verify(ctx, raw)
	if err != nil {
		return nil, refuse("id_token_invalid", "The identity provider's answer could not be verified.")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, refuse("id_token_invalid", "The identity provider's answer could not be read.")
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		return nil, refuse("nonce_mismatch", "The login answer does not belong to this login.")
	}
	azp, _ := claims["azp"].(string)
	if (len(idt.Audience) > 1 || azp != "") && azp != rp.ClientID {
		return nil, refuse("azp_mismatch", "The ID token was issued to another application.")
	}
	if idt.IssuedAt.IsZero() || idt.IssuedAt.After(now.Add(reauthSkew)) ||
		idt.IssuedAt.Before(time.Unix(st.Started, 0).Add(-iatSkew)) {
		return nil, refuse("iat_invalid", "The ID token was not issued for this login.")
	}
	if idt.Subject == "" {
		return nil, refuse("no_subject", "The ID token names no user.")
	}
	if len(idt.Subject) > 255 || cleanText(idt.Subject) != nil {
		return nil, refuse("subject_invalid", "The ID token names its user in a form Gatehouse does not accept.")
	}
	id := &Identity{
		Issuer:     idt.Issuer,
		Subject:    idt.Subject,
		RawIDToken: raw,
	}
	// OIDC Core 3.1.2.1: with max_age sent, auth_time is required. A time
	// in the future (beyond the skew) would keep a sign-in "fresh" past
	// any max_age, so it is refused too.
	_, hasAuthTime := claims["auth_time"]
	id.AuthTime = int64Claim(claims["auth_time"])
	switch {
	case hasAuthTime && id.AuthTime == 0:
		return nil, refuse("auth_time_invalid", "The identity provider returned an unreadable sign-in time.")
	case id.AuthTime == 0 && (st.MaxAge > 0 || st.ForceLogin):
		return nil, refuse("auth_time_missing", "The identity provider did not say when you signed in, which this login asked for.")
	case time.Unix(id.AuthTime, 0).After(now.Add(reauthSkew)):
		return nil, refuse("auth_time_future", "The identity provider returned a sign-in time in the future.")
	}
	if st.ForceLogin && time.Unix(id.AuthTime, 0).Before(time.Unix(st.Started, 0).Add(-reauthSkew)) {
		return nil, refuse("not_reauthenticated", "The identity provider did not ask you to sign in again. Please try again or contact your administrator.")
	}
	if st.MaxAge > 0 && now.Sub(time.Unix(id.AuthTime, 0)) > time.Duration(st.MaxAge)*time.Second+reauthSkew {
		return nil, refuse("auth_time_too_old", "The identity provider returned a login older than allowed.")
	}
	rp.readClaims(id, claims)
	return id, nil
}

// readClaims fills in the user's claims. Every value is checked before
// anything decides on it: an email must be one plain address (see
// ParseEmail), other text must be clean (see cleanText). A value that is
// not is left out, and Identity.Refused says which claim and why (never
// the value), for the audit log.
func (rp *RelyingParty) readClaims(id *Identity, claims map[string]any) {
	text := func(name string, v string) string {
		if v != "" && cleanText(v) != nil {
			id.Refused = append(id.Refused, name+": control or bidi characters, or invalid UTF-8")
			return ""
		}
		return v
	}
	list := func(name string, vals []string) []string {
		out := vals[:0]
		for _, v := range vals {
			if cleanText(v) != nil {
				id.Refused = append(id.Refused, name+": a value with control or bidi characters, or invalid UTF-8")
				continue
			}
			out = append(out, v)
		}
		return out
	}
	if v, ok := claims["email"]; ok && v != "" && (rp.TrustUnverifiedEmail || boolClaim(claims["email_verified"])) {
		s, _ := v.(string)
		if email, err := ParseEmail(s); err == nil {
			id.Email = email
		} else {
			id.Refused = append(id.Refused, "email: not a single plain address")
		}
	}
	if v, ok := claims["sid"]; ok {
		if sid, _ := v.(string); sid != "" && len(sid) <= 255 {
			id.SID = sid
		} else {
			id.Refused = append(id.Refused, "sid: not a string of 1 to 255 bytes (back-channel logout can only name this session by its user)")
		}
	}
	name, _ := claims["name"].(string)
	id.Name = text("name", name)
	acr, _ := claims["acr"].(string)
	id.ACR = text("acr", acr)
	id.AMR = list("amr", stringsClaim(claims["amr"]))
	if rp.GroupsClaim != "" {
		id.Groups = list("groups", stringsClaim(lookupClaim(claims, rp.GroupsClaim)))
	}
	for _, name := range rp.ExtraClaims {
		if v, ok := stringClaim(lookupClaim(claims, name)); ok {
			if v = text(name, v); v == "" {
				continue
			}
			if id.Extra == nil {
				id.Extra = make(map[string]string)
			}
			id.Extra[name] = v
		}
	}
}

func (rp *RelyingParty) idTokenVerifier(m *Metadata) *oidc.IDTokenVerifier {
	if v := rp.verifier.Load(); v != nil {
		return v
	}
	// The issuer's shared key set, not go-oidc's own, which fetches the
	// keys again for every token it cannot verify.
	v := oidc.NewVerifier(rp.Discovery.issuer, m.Keys, &oidc.Config{ClientID: rp.ClientID, Now: rp.now, SupportedSigningAlgs: m.Algorithms})
	rp.verifier.Store(v)
	return v
}

// EndSessionURL is where to send a browser to end its IdP session, or ""
// when the IdP has no end_session_endpoint.
func (rp *RelyingParty) EndSessionURL(ctx context.Context, idTokenHint, postLogoutRedirect string) (string, error) {
	m, err := rp.Discovery.Get(ctx)
	if err != nil {
		return "", err
	}
	if m.EndSessionURL == "" {
		return "", nil
	}
	u, err := url.Parse(m.EndSessionURL)
	if err != nil {
		return "", fmt.Errorf("%w: end_session_endpoint: %v", ErrProviderUnavailable, err)
	}
	q := u.Query()
	q.Set("client_id", rp.ClientID)
	if idTokenHint != "" {
		q.Set("id_token_hint", idTokenHint)
	}
	if postLogoutRedirect != "" {
		q.Set("post_logout_redirect_uri", postLogoutRedirect)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// lookupClaim finds a claim by its exact name, else by a dotted path into
// nested objects.
func lookupClaim(claims map[string]any, name string) any {
	if v, ok := claims[name]; ok {
		return v
	}
	var cur any = claims
	for part := range strings.SplitSeq(name, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = obj[part]
	}
	return cur
}

func boolClaim(v any) bool {
	switch b := v.(type) {
	case bool:
		return b
	case string: // some IdPs send "true"
		return b == "true"
	}
	return false
}

func int64Claim(v any) int64 {
	if f, ok := v.(float64); ok && f > 0 && f < 1<<53 {
		return int64(f)
	}
	return 0
}

// stringsClaim reads a list of strings, or one string, and drops anything
// else.
func stringsClaim(v any) []string {
	switch t := v.(type) {
	case string:
		if t != "" {
			return []string{t}
		}
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			if s, ok := e.(string); ok && s != "" && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// stringClaim renders a scalar claim, or a list of strings joined by
// commas, as one string.
func stringClaim(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, t != ""
	case bool:
		return strconv.FormatBool(t), true
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), true
	case []any:
		ss := stringsClaim(t)
		return strings.Join(ss, ","), len(ss) > 0
	case map[string]any:
		b, err := json.Marshal(t)
		return string(b), err == nil
	}
	return "", false
}
