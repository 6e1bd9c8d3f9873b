package authn

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"
)

// OpenID Connect Back-Channel Logout 1.0: the IdP ends a user's IdP
// session and POSTs a logout token, a JWT it signs like an ID token, to
// every client the user signed in to in that session. The token names
// the IdP session (sid), the user (sub), or both.

// BackchannelLogoutEvent is the member of a logout token's events claim
// that makes it a logout token.
const BackchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// LogoutTokenMaxAge is how old (by its iat) a logout token may be. IdPs
// send one the moment the user logs out, and the spec suggests tokens
// live about two minutes; a token must not be usable for longer than its
// jti is remembered.
const LogoutTokenMaxAge = 2 * time.Minute

// LogoutReason says why a logout token was refused. The values appear in
// audit lines, so they are stable.
type LogoutReason string

const (
	LogoutTooLarge  LogoutReason = "logout_token_too_large"  // over 16 KiB
	LogoutMalformed LogoutReason = "logout_token_malformed"  // not a compact JWS with a JSON object as claims, a critical header, or a claim of the wrong type
	LogoutAlg       LogoutReason = "logout_token_alg"        // none, HMAC, or an algorithm the issuer does not sign ID tokens with
	LogoutTyp       LogoutReason = "logout_token_typ"        // a typ header other than logout+jwt (or JWT)
	LogoutSignature LogoutReason = "logout_token_signature"  // no key of the issuer verifies it
	LogoutIssuer    LogoutReason = "logout_token_issuer"     // iss is not exactly the issuer
	LogoutAudience  LogoutReason = "logout_token_audience"   // aud does not name this client
	LogoutIAT       LogoutReason = "logout_token_iat"        // iat missing, in the future or older than 2 minutes
	LogoutExpired   LogoutReason = "logout_token_expired"    // exp has passed
	LogoutJTI       LogoutReason = "logout_token_jti"        // no jti (or one over 255 bytes)
	LogoutEvents    LogoutReason = "logout_token_events"     // events missing, or without the back-channel logout member as a JSON object
	LogoutNonce     LogoutReason = "logout_token_nonce"      // a nonce claim (forbidden: an ID token is not a logout token)
	LogoutSubject   LogoutReason = "logout_token_no_subject" // neither a sid nor a sub, or one that is empty, over 255 bytes or not clean text
)

// LogoutReasons lists every LogoutReason, for documentation and its test.
var LogoutReasons = []LogoutReason{LogoutTooLarge, LogoutMalformed, LogoutAlg, LogoutTyp, LogoutSignature, LogoutIssuer,
	LogoutAudience, LogoutIAT, LogoutExpired, LogoutJTI, LogoutEvents, LogoutNonce, LogoutSubject}

// LogoutTokenError is a logout token refused. Msg says what was wrong in
// words safe to send back to the IdP: it never repeats the token.
type LogoutTokenError struct {
	Reason LogoutReason
	Msg    string
}

func (e *LogoutTokenError) Error() string {
	return "authn: logout token refused: " + string(e.Reason) + ": " + e.Msg
}

func refuseLogout(reason LogoutReason, msg string) error {
	return &LogoutTokenError{Reason: reason, Msg: msg}
}

// LogoutToken is a verified logout token.
type LogoutToken struct {
	Issuer  string
	Subject string // "" when the token names only the IdP session
	SID     string // the IdP session; "" when the token names only the user
	JTI     string
	// IssuedAt is the token's iat; Expires its exp, zero when it has none.
	IssuedAt, Expires time.Time
}

// AcceptedUntil is the last moment the token could be accepted: its jti
// must be remembered until then, so that a replay is refused.
func (t *LogoutToken) AcceptedUntil() time.Time {
	end := t.IssuedAt.Add(LogoutTokenMaxAge)
	if !t.Expires.IsZero() && t.Expires.Add(reauthSkew).Before(end) {
		end = t.Expires.Add(reauthSkew)
	}
	return end
}

// LogoutVerifier verifies the logout tokens one client of one issuer
// receives, with the issuer's keys and algorithms from discovery (the
// same as for its ID tokens).
type LogoutVerifier struct {
	Discovery *Discovery
	ClientID  string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify checks a logout token fully (Back-Channel Logout 1.0, section
// 2.6): a compact JWS of at most 16 KiB; an asymmetric algorithm the
// issuer signs ID tokens with, never none or HMAC; typ logout+jwt (or
// JWT, or none); a signature by one of the issuer's keys; iss exactly
// the issuer; aud naming this client; iat within the last 2 minutes and
// not more than 5 s ahead; exp, when present, not passed; a jti; events
// with the back-channel logout member, a JSON object; no nonce; and a
// sid or a sub. The jti is the caller's to check against replays
// (AcceptedUntil says for how long). A refusal is a *LogoutTokenError;
// an IdP that cannot be reached (discovery, keys) is
// ErrProviderUnavailable.
func (v *LogoutVerifier) Verify(ctx context.Context, raw string) (*LogoutToken, error) {
	hdr, err := readLogoutHeader(raw)
	if err != nil {
		return nil, err
	}
	m, err := v.Discovery.Get(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	c := logoutChecks{issuer: v.Discovery.Issuer(), clientID: v.ClientID, algs: m.Algorithms, keys: m.Keys}
	return c.verify(ctx, raw, hdr, now)
}

// logoutHeader is what is read of a logout token's JOSE header before
// its signature is checked.
type logoutHeader struct {
	Alg  string          `json:"alg"`
	Typ  *string         `json:"typ"`
	Crit json.RawMessage `json:"crit"`
}

// readLogoutHeader checks a token's size and form (three base64url
// parts, no JSON serialization) and reads its header.
func readLogoutHeader(raw string) (logoutHeader, error) {
	var h logoutHeader
	if len(raw) > maxTokenSize {
		return h, refuseLogout(LogoutTooLarge, "the logout token is larger than 16 KiB")
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return h, refuseLogout(LogoutMalformed, "the logout token is not a compact JWS")
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
	if err != nil || !isJSONObject(b) || json.Unmarshal(b, &h) != nil {
		return h, refuseLogout(LogoutMalformed, "the logout token's header is not a JSON object")
	}
	return h, nil
}

// isJSONObject reports whether b is one JSON object (and nothing after
// it).
func isJSONObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 1 && b[0] == '{' && json.Valid(b)
}

// signatureVerifier is the issuer's key set (KeySet).
type signatureVerifier interface {
	VerifySignature(ctx context.Context, token string) ([]byte, error)
}

// logoutChecks are what a logout token is checked against.
type logoutChecks struct {
	issuer, clientID string
	algs             []string // the issuer's ID-token algorithms that Gatehouse accepts
	keys             signatureVerifier
}

func (c logoutChecks) verify(ctx context.Context, raw string, hdr logoutHeader, now time.Time) (*LogoutToken, error) {
	if hdr.Alg == "" || !slices.Contains(c.algs, hdr.Alg) {
		return nil, refuseLogout(LogoutAlg, "the logout token's algorithm is not one the issuer signs ID tokens with")
	}
	if hdr.Typ != nil {
		typ := strings.TrimPrefix(strings.ToLower(*hdr.Typ), "application/")
		if typ != "logout+jwt" && typ != "jwt" {
			return nil, refuseLogout(LogoutTyp, "the logout token's typ is not logout+jwt")
		}
	}
	if hdr.Crit != nil {
		return nil, refuseLogout(LogoutMalformed, "the logout token has critical header parameters")
	}
	payload, err := c.keys.VerifySignature(ctx, raw)
	if errors.Is(err, ErrProviderUnavailable) {
		return nil, err
	}
	if err != nil {
		return nil, refuseLogout(LogoutSignature, "no key of the issuer verifies the logout token's signature")
	}
	return c.claims(payload, now)
}

// logoutClaims are a logout token's claims, each kept raw so that its
// type is checked, and a claim that is present is told from one that is
// not.
type logoutClaims struct {
	Iss    json.RawMessage `json:"iss"`
	Aud    json.RawMessage `json:"aud"`
	Iat    json.RawMessage `json:"iat"`
	Exp    json.RawMessage `json:"exp"`
	JTI    json.RawMessage `json:"jti"`
	Events json.RawMessage `json:"events"`
	Nonce  json.RawMessage `json:"nonce"`
	Sub    json.RawMessage `json:"sub"`
	SID    json.RawMessage `json:"sid"`
}

// claims checks a verified token's claims.
func (c logoutChecks) claims(payload []byte, now time.Time) (*LogoutToken, error) {
	var cl logoutClaims
	if !isJSONObject(payload) || json.Unmarshal(payload, &cl) != nil {
		return nil, refuseLogout(LogoutMalformed, "the logout token's claims are not a JSON object")
	}
	t := &LogoutToken{}
	if json.Unmarshal(cl.Iss, &t.Issuer) != nil || t.Issuer != c.issuer {
		return nil, refuseLogout(LogoutIssuer, "the logout token's iss is not this client's issuer")
	}
	if !audienceHas(cl.Aud, c.clientID) {
		return nil, refuseLogout(LogoutAudience, "the logout token's aud does not name this client")
	}
	iat, ok := unixClaim(cl.Iat)
	if !ok {
		return nil, refuseLogout(LogoutIAT, "the logout token has no valid iat")
	}
	t.IssuedAt = time.Unix(iat, 0)
	if t.IssuedAt.After(now.Add(reauthSkew)) || t.IssuedAt.Add(LogoutTokenMaxAge).Before(now) {
		return nil, refuseLogout(LogoutIAT, "the logout token was issued in the future or more than 2 minutes ago")
	}
	if cl.Exp != nil {
		exp, ok := unixClaim(cl.Exp)
		if !ok {
			return nil, refuseLogout(LogoutMalformed, "the logout token's exp is not a time")
		}
		t.Expires = time.Unix(exp, 0)
		if !now.Before(t.Expires.Add(reauthSkew)) {
			return nil, refuseLogout(LogoutExpired, "the logout token has expired")
		}
	}
	if !hasLogoutEvent(cl.Events) {
		return nil, refuseLogout(LogoutEvents, "the logout token's events do not hold the back-channel logout event as a JSON object")
	}
	if cl.Nonce != nil {
		return nil, refuseLogout(LogoutNonce, "the logout token carries a nonce")
	}
	var sub, sid string
	subOK, sidOK := identifierClaim(cl.Sub, &sub), identifierClaim(cl.SID, &sid)
	if !subOK || !sidOK || (sub == "" && sid == "") {
		return nil, refuseLogout(LogoutSubject, "the logout token names neither a session (sid) nor a user (sub) in a usable form")
	}
	t.Subject, t.SID = sub, sid
	if json.Unmarshal(cl.JTI, &t.JTI) != nil || t.JTI == "" || len(t.JTI) > 255 {
		return nil, refuseLogout(LogoutJTI, "the logout token has no valid jti")
	}
	return t, nil
}

// audienceHas reports whether aud (a string or a list of strings) names
// clientID.
func audienceHas(aud json.RawMessage, clientID string) bool {
	var one string
	if json.Unmarshal(aud, &one) == nil {
		return one == clientID
	}
	var many []string
	return json.Unmarshal(aud, &many) == nil && slices.Contains(many, clientID)
}

// unixClaim reads a NumericDate: a positive number of seconds, fractions
// allowed (and dropped).
func unixClaim(raw json.RawMessage) (int64, bool) {
	var f float64
	if raw == nil || json.Unmarshal(raw, &f) != nil || f <= 0 || f >= 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// hasLogoutEvent reports whether events is a JSON object whose
// back-channel logout member is a JSON object.
func hasLogoutEvent(events json.RawMessage) bool {
	var ev map[string]json.RawMessage
	if !isJSONObject(events) || json.Unmarshal(events, &ev) != nil {
		return false
	}
	member, ok := ev[BackchannelLogoutEvent]
	return ok && isJSONObject(member)
}

// identifierClaim reads an optional sub or sid into *out: absent is fine
// ("" in out); present, it must be a non-empty string of at most 255
// bytes of clean text, or it is refused (ok false).
func identifierClaim(raw json.RawMessage, out *string) bool {
	if raw == nil {
		return true
	}
	if json.Unmarshal(raw, out) != nil || *out == "" || len(*out) > 255 || cleanText(*out) != nil {
		*out = ""
		return false
	}
	return true
}
