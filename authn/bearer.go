package authn

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// BearerIssuer verifies the access tokens (RFC 9068 JWTs) one issuer
// gives machine clients and apps calling on a person's behalf.
type BearerIssuer struct {
	// Discovery is the issuer's: its keys verify the tokens, its issuer
	// URL must be the token's iss exactly.
	Discovery *Discovery
	// Audiences are the values of aud this site accepts; a token must
	// name at least one.
	Audiences []string
	// Algorithms are the signing algorithms accepted; empty means every
	// asymmetric one the issuer announces. HS* and none never are.
	Algorithms []string
	// ScopesClaim names the claim holding the token's scopes: a string of
	// space-separated scopes (scope, RFC 9068) or a list (scp). Default
	// "scope".
	ScopesClaim string
	// RequireScopes must all be in the token, else it is refused with
	// insufficient_scope (403).
	RequireScopes []string
	// PlainJWT also accepts tokens whose typ is JWT or absent (issuers
	// that do not follow RFC 9068); by default only at+jwt is.
	PlainJWT bool
	// DPoPRequired refuses tokens not bound to a key (RFC 9449); a bound
	// token always needs its proof.
	DPoPRequired bool
	// GroupsClaim names a user token's groups claim (a dotted path).
	GroupsClaim string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// AccessToken is a verified access token: who it is for and what it
// allows.
type AccessToken struct {
	Issuer, Subject string
	// ClientID is the client the token was issued to (client_id, else
	// azp).
	ClientID string
	// Service is true for a client acting for itself (its subject is
	// its client id, as RFC 9068 says of client-credentials tokens),
	// false for a token on a person's behalf.
	Service bool
	Scopes  []string
	// Email (verified only), Name, Groups, ACR, AMR and AuthTime describe
	// the person of a user token, from its claims, checked like a
	// sign-in's.
	Email, Name, ACR string
	Groups, AMR      []string
	AuthTime         int64
	IssuedAt, Expiry time.Time
	ID               string // jti, for the audit log
	// JKT is the thumbprint of the key the token is bound to (cnf.jkt,
	// RFC 9449), "" for a bearer token.
	JKT string
}

// Kind is "service" or "user".
func (t *AccessToken) Kind() string {
	if t.Service {
		return "service"
	}
	return "user"
}

// BearerError is a refused bearer token, in RFC 6750's terms: Code is
// invalid_request, invalid_token or insufficient_scope; Description says
// why in words a client developer can act on (never the token); Reason
// is the audit log's.
type BearerError struct {
	Code, Description, Reason string
}

func (e *BearerError) Error() string {
	return "authn: bearer token refused: " + e.Code + ": " + e.Description
}

func invalidToken(reason, desc string) error {
	return &BearerError{Code: "invalid_token", Reason: reason, Description: desc}
}

// The bearer token refusals, as the audit log names them.
const (
	BearerMalformed     = "token_malformed"
	BearerAlgorithm     = "token_algorithm"
	BearerType          = "token_type"
	BearerIssuerUnknown = "token_issuer"
	BearerSignature     = "token_signature"
	BearerAudience      = "token_audience"
	BearerExpired       = "token_expired"
	BearerNotYetValid   = "token_not_yet_valid"
	BearerIssuedAt      = "token_iat"
	BearerClaims        = "token_claims"
	BearerScope         = "insufficient_scope"
)

// BearerReasons lists the refusals, for documentation and its test.
var BearerReasons = []string{BearerMalformed, BearerAlgorithm, BearerType, BearerIssuerUnknown, BearerSignature,
	BearerAudience, BearerExpired, BearerNotYetValid, BearerIssuedAt, BearerClaims, BearerScope}

// ParseBearer reads the issuer a token claims, without verifying
// anything: to choose the BearerIssuer that will.
func ParseBearer(raw string) (iss string, err error) {
	if len(raw) > maxTokenSize {
		return "", invalidToken(BearerMalformed, "the token is too large")
	}
	if alg := headerAlg(raw); alg != "" && !slices.Contains(signingAlgs, jose.SignatureAlgorithm(alg)) {
		return "", invalidToken(BearerAlgorithm, fmt.Sprintf("tokens signed with %q are not accepted", alg))
	}
	jws, err := jose.ParseSigned(raw, allAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return "", invalidToken(BearerMalformed, "the token is not a signed JWT")
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c) != nil || c.Iss == "" {
		return "", invalidToken(BearerMalformed, "the token names no issuer")
	}
	return c.Iss, nil
}

// allAlgs are the algorithms jose may parse, so that a token with a
// refused one (none, HS256) is named as such rather than as unreadable.
var allAlgs = append([]jose.SignatureAlgorithm{jose.HS256, jose.HS384, jose.HS512}, signingAlgs...)

// Verify checks a token fully: its algorithm, type, signature (the
// issuer's keys), iss, aud, exp, nbf and iat (with the sign-in skews),
// its subject and client, and the required scopes.
func (b *BearerIssuer) Verify(ctx context.Context, raw string) (*AccessToken, error) {
	if len(raw) > maxTokenSize {
		return nil, invalidToken(BearerMalformed, "the token is too large")
	}
	if alg := headerAlg(raw); alg != "" && !slices.Contains(signingAlgs, jose.SignatureAlgorithm(alg)) {
		return nil, invalidToken(BearerAlgorithm, fmt.Sprintf("tokens signed with %q are not accepted", alg))
	}
	jws, err := jose.ParseSigned(raw, allAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, invalidToken(BearerMalformed, "the token is not a signed JWT")
	}
	h := jws.Signatures[0].Header
	m, err := b.Discovery.Get(ctx)
	if err != nil {
		return nil, err
	}
	algs := b.Algorithms
	if len(algs) == 0 {
		algs = m.Algorithms
	}
	if !slices.Contains(algs, h.Algorithm) || !slices.Contains(signingAlgs, jose.SignatureAlgorithm(h.Algorithm)) {
		return nil, invalidToken(BearerAlgorithm, fmt.Sprintf("tokens signed with %q are not accepted", h.Algorithm))
	}
	typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
	switch t := strings.ToLower(typ); {
	case t == "at+jwt" || t == "application/at+jwt":
	case b.PlainJWT && (t == "" || t == "jwt"):
	default:
		return nil, invalidToken(BearerType, "the token is not an access token (its typ must be at+jwt)")
	}
	payload, err := m.Keys.VerifySignature(ctx, raw)
	if err != nil {
		if errors.Is(err, ErrProviderUnavailable) {
			return nil, err
		}
		return nil, invalidToken(BearerSignature, "the token's signature does not verify with the issuer's keys")
	}
	var c struct {
		Iss      string          `json:"iss"`
		Sub      string          `json:"sub"`
		Aud      audience        `json:"aud"`
		Exp      *json.Number    `json:"exp"`
		Nbf      *json.Number    `json:"nbf"`
		Iat      *json.Number    `json:"iat"`
		ClientID string          `json:"client_id"`
		Azp      string          `json:"azp"`
		Jti      string          `json:"jti"`
		Nonce    json.RawMessage `json:"nonce"`
		Cnf      struct {
			JKT string `json:"jkt"`
		} `json:"cnf"`
	}
	d := json.NewDecoder(strings.NewReader(string(payload)))
	d.UseNumber()
	if err := d.Decode(&c); err != nil {
		return nil, invalidToken(BearerClaims, "the token's claims cannot be read")
	}
	if c.Iss != b.Discovery.Issuer() {
		return nil, invalidToken(BearerIssuerUnknown, "the token is from another issuer")
	}
	if !slices.ContainsFunc(c.Aud, func(a string) bool { return slices.Contains(b.Audiences, a) }) {
		return nil, invalidToken(BearerAudience, "the token is not meant for this service (aud)")
	}
	now := b.now()
	exp, okExp := numericDate(c.Exp)
	iat, okIat := numericDate(c.Iat)
	switch {
	case !okExp:
		return nil, invalidToken(BearerClaims, "the token has no expiry (exp)")
	case !now.Before(exp):
		return nil, invalidToken(BearerExpired, "the token has expired")
	case !okIat:
		return nil, invalidToken(BearerIssuedAt, "the token has no issue time (iat)")
	case iat.After(now.Add(reauthSkew)):
		return nil, invalidToken(BearerIssuedAt, "the token was issued in the future")
	}
	if nbf, ok := numericDate(c.Nbf); ok && nbf.After(now.Add(reauthSkew)) {
		return nil, invalidToken(BearerNotYetValid, "the token is not valid yet (nbf)")
	}
	if len(c.Nonce) > 0 {
		// An ID token (it answers a sign-in's nonce) is not an access token.
		return nil, invalidToken(BearerType, "the token is an ID token, not an access token")
	}
	client := c.ClientID
	if client == "" {
		client = c.Azp
	}
	if c.Sub == "" || len(c.Sub) > 255 || cleanText(c.Sub) != nil || cleanText(client) != nil || len(client) > 255 {
		return nil, invalidToken(BearerClaims, "the token's sub or client_id is missing or not acceptable")
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, invalidToken(BearerClaims, "the token's claims cannot be read")
	}
	t := &AccessToken{Issuer: c.Iss, Subject: c.Sub, ClientID: client, Service: client != "" && c.Sub == client,
		Scopes: b.scopes(claims), IssuedAt: iat, Expiry: exp, ID: c.Jti, JKT: c.Cnf.JKT}
	if len(t.JKT) > 128 || cleanText(t.JKT) != nil {
		return nil, invalidToken(BearerClaims, "the token's cnf.jkt is not acceptable")
	}
	if cleanText(t.ID) != nil || len(t.ID) > 255 {
		t.ID = ""
	}
	if !t.Service {
		b.readPerson(t, claims)
	}
	for _, s := range b.RequireScopes {
		if !slices.Contains(t.Scopes, s) {
			return t, &BearerError{Code: "insufficient_scope", Reason: BearerScope,
				Description: "the token lacks the scope " + s}
		}
	}
	return t, nil
}

// scopes reads the scopes claim: a space-separated string or a list.
func (b *BearerIssuer) scopes(claims map[string]any) []string {
	name := b.ScopesClaim
	if name == "" {
		name = "scope"
	}
	var out []string
	switch v := lookupClaim(claims, name).(type) {
	case string:
		out = strings.Fields(v)
	default:
		out = stringsClaim(v)
	}
	return slices.DeleteFunc(out, func(s string) bool { return cleanText(s) != nil })
}

// readPerson fills in a user token's person, as a sign-in reads an ID
// token: a verified email only, clean text only.
func (b *BearerIssuer) readPerson(t *AccessToken, claims map[string]any) {
	clean := func(vs []string) []string {
		return slices.DeleteFunc(vs, func(s string) bool { return cleanText(s) != nil })
	}
	if v, ok := claims["email"].(string); ok && boolClaim(claims["email_verified"]) {
		if email, err := ParseEmail(v); err == nil {
			t.Email = email
		}
	}
	if v, ok := claims["name"].(string); ok && cleanText(v) == nil {
		t.Name = v
	}
	if v, ok := claims["acr"].(string); ok && cleanText(v) == nil {
		t.ACR = v
	}
	t.AMR = clean(stringsClaim(claims["amr"]))
	t.AuthTime = int64Claim(claims["auth_time"])
	if b.GroupsClaim != "" {
		t.Groups = clean(stringsClaim(lookupClaim(claims, b.GroupsClaim)))
	}
}

func (b *BearerIssuer) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// audience is aud: one string or a list.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// headerAlg is the alg a compact JWS's header names, unverified ("" if
// unreadable), so that none and HS* are named when refused.
func headerAlg(raw string) string {
	head, _, ok := strings.Cut(raw, ".")
	if !ok || len(head) > 4096 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ""
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(b, &h) != nil || cleanText(h.Alg) != nil || len(h.Alg) > 32 {
		return ""
	}
	return h.Alg
}

// numericDate reads a NumericDate.
func numericDate(n *json.Number) (time.Time, bool) {
	if n == nil {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil || f <= 0 || f > 1e11 {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}
