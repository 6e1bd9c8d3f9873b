package gate

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// The answers to machine clients (RFC 6750, RFC 9470).
const (
	ReasonBearerRequest     Reason = "bearer_malformed"            // an Authorization header that is not one usable bearer token
	ReasonBearerRevoked     Reason = "token_revoked"               // the token's user was de-provisioned or logged out everywhere after it was issued
	ReasonStepUpNotPossible Reason = "step_up_not_possible"        // a service token on a path that needs a person's stronger sign-in
	ReasonBearerStepUp      Reason = "insufficient_authentication" // a user token whose sign-in does not meet the path's step-up
)

// bearerToken reads the request's access token (scheme Bearer, or DPoP
// for a sender-constrained one, RFC 9449): ok when it has one; bad when
// its Authorization header cannot be read (several of them, or the
// scheme without one token68). Other schemes (Basic) are not
// Gatehouse's and pass as before.
func bearerToken(r *http.Request) (token string, ok, bad bool) {
	token, _, ok, bad = accessToken(r)
	return token, ok, bad
}

// tokenScheme reports whether s is a scheme of access tokens.
func tokenScheme(s string) bool {
	return strings.EqualFold(s, "Bearer") || strings.EqualFold(s, "DPoP")
}

// accessToken is bearerToken with the scheme: dpop when it was DPoP.
func accessToken(r *http.Request) (token string, dpop, ok, bad bool) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", false, false, false
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !tokenScheme(scheme) {
		if len(vals) > 1 {
			for _, v := range vals[1:] {
				if s, _, _ := strings.Cut(strings.TrimSpace(v), " "); tokenScheme(s) {
					return "", false, false, true
				}
			}
		}
		return "", false, false, false
	}
	dpop = strings.EqualFold(scheme, "DPoP")
	token = strings.TrimSpace(rest)
	if len(vals) > 1 || token == "" || !isToken68(token) {
		return "", false, false, true
	}
	return token, dpop, true, false
}

// isToken68 reports whether s is RFC 7235's token68.
func isToken68(s string) bool {
	end := len(s)
	for end > 0 && s[end-1] == '=' {
		end--
	}
	if end == 0 {
		return false
	}
	for i := 0; i < end; i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return false
		}
	}
	return true
}

// checkBearer decides a request that carries a bearer token: the token
// is verified, its user's revocations and grants are looked up, and the
// allow rules, the policy and the step-up rules apply as to a session.
// A client gets no cookie, no idle clock and never a redirect: failures
// are 401 with WWW-Authenticate (or 403), in JSON.
func (g *Gate) checkBearer(req *Request, out Outcome, raw string, bad bool) Outcome {
	r, now := req.HTTP, req.Start
	if bad {
		return bearerRefused(out, http.StatusBadRequest, "invalid_request", ReasonBearerRequest,
			"send one Authorization header: Bearer <token>")
	}
	tok, err := g.verifyBearer(req, raw)
	var be *authn.BearerError
	switch {
	case errors.As(err, &be) && be.Code == "insufficient_scope":
		out.Audit.setToken(tok)
		return bearerRefused(out, http.StatusForbidden, be.Code, Reason(be.Reason), be.Description)
	case errors.As(err, &be):
		return bearerRefused(out, http.StatusUnauthorized, be.Code, Reason(be.Reason), be.Description)
	case errors.Is(err, authn.ErrProviderUnavailable):
		// The issuer's keys cannot be fetched: the token cannot be checked.
		g.log.Error("token issuer unavailable", zap.Error(err))
		return out.refuse(Unavailable, http.StatusBadGateway, ResultError, ReasonIdPUnavailable, &Answer{Error: "idp_unavailable",
			Message: "The token's issuer cannot be reached to check it. Retry in a minute."})
	case err != nil:
		return out.fail(err)
	}
	out.Audit.setToken(tok)
	if refused, ok := g.checkDPoP(req, out, raw, tok); !ok {
		return refused
	}
	sess := tokenSession(tok, now.Unix())
	for _, idp := range g.idps {
		if idp.Issuer != tok.Issuer {
			continue
		}
		sess.IdP = idp.Name
		if !tok.Service && !idp.allows(tok.Email) {
			// A partner's IdP speaks for its own people only, by token too.
			return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonDomainNotAllowed, &Answer{Error: "forbidden",
				Message: "This token's issuer may not vouch for this user's email domain here."})
		}
	}
	user := grants.User{Iss: tok.Issuer, Sub: tok.Subject}
	st, err := g.cfg.Grants.Lookup(r.Context(), user, "", now)
	grantsErr := err != nil
	switch {
	case grantsErr && !g.cfg.Grants.Ready():
		return out.refuse(Unavailable, http.StatusServiceUnavailable, ResultDeny, ReasonRevocationsDown, &Answer{Error: "unavailable",
			Message: "This service is starting up and cannot check tokens yet. Please try again in a minute."})
	case st.Revoked(tok.IssuedAt.Unix()):
		return bearerRefused(out, http.StatusUnauthorized, "invalid_token", ReasonBearerRevoked, "the token's user was signed out everywhere after it was issued")
	}
	out.Audit.Grants = grantResources(st.Grants)
	if !g.entitled(sess) {
		return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonNotAllowed, &Answer{Error: "forbidden",
			Message: "This token's user is not in a team or email domain that may use this service."})
	}

	var dec policies.Decision
	if g.cfg.Policy != nil {
		dec, err = g.decideToken(req, sess, tok, &out, st.Grants, grantsErr)
		switch {
		case err != nil:
			g.log.Error("policy error: denied", zap.String("decision_id", out.Audit.ID()), zap.String("revision", out.Audit.Revision), zap.Error(err))
			return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonPolicyError, &Answer{Error: "forbidden",
				Message: "Access could not be checked just now, so it is refused. Retry; if it keeps happening, quote the decision_id."})
		case !dec.Allow:
			out.Audit.PolicyReason = dec.Reason
			if dec.RequestGrant != nil && grantsErr {
				return out.refuse(Unavailable, http.StatusServiceUnavailable, ResultDeny, ReasonGrantsDown, &Answer{Error: "grants_unavailable",
					Message: "Temporary access to " + dec.RequestGrant.Resource + " cannot be checked right now. Retry in a minute."})
			}
			msg := dec.Reason
			if msg == "" {
				msg = "This token does not give access to this resource."
			}
			return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonPolicyDeny, &Answer{Error: "forbidden", Message: msg})
		}
	}

	if len(g.cfg.StepUp) > 0 || dec.StepUp != nil {
		reqs, err := g.cfg.StepUp.For(req.forMatch(), obligation(dec)...)
		if err != nil {
			return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonStepUpConflict, &Answer{Error: "forbidden",
				Message: "This resource is set up in a way that no sign-in can satisfy."})
		}
		if len(reqs) > 0 && tok.Service {
			return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonStepUpNotPossible, &Answer{Error: "forbidden",
				Message: "This resource needs a person's recent, stronger sign-in; a service's token cannot give it."})
		}
		if need, why := authn.FirstUnmet(reqs, sess, now); why != "" {
			// RFC 9470: the client must get a token from a stronger sign-in.
			o := bearerRefused(out, http.StatusUnauthorized, "insufficient_user_authentication", ReasonBearerStepUp,
				"this resource needs a stronger or more recent sign-in ("+why+")")
			challenge := o.Header.Get("WWW-Authenticate")
			if len(need.ACR) > 0 {
				challenge += `, acr_values="` + strings.Join(need.ACR, " ") + `"`
			}
			if need.MaxAge > 0 {
				challenge += ", max_age=" + strconv.Itoa(int(need.MaxAge.Seconds()))
			}
			o.Header.Set("WWW-Authenticate", challenge)
			o.Answer.Requirement = &RequirementJSON{ACR: need.ACR, AMR: need.AMR}
			return o
		}
	}

	hvs, err := g.upstreamHeaders(sess, dec, now, 1)
	if err != nil {
		return out.fail(err)
	}
	if !g.cfg.PassAuthorization {
		hvs = append(hvs, HeaderValue{Name: "Authorization"}) // removed: the upstream never sees the token
	}
	out.Upstream = hvs
	out.Kind, out.Result = Allow, ResultAllow
	return out
}

// checkDPoP applies RFC 9449 to a verified token: a token bound to a key
// (cnf.jkt) must come with the DPoP scheme and one proof of that key for
// this request, used once on any node; an unbound one must not claim
// the DPoP scheme, and is refused where the issuer's block requires
// DPoP.
func (g *Gate) checkDPoP(req *Request, out Outcome, raw string, tok *authn.AccessToken) (Outcome, bool) {
	r, now := req.HTTP, req.Start
	_, scheme, _, _ := accessToken(r)
	proofs := r.Header.Values("DPoP")
	refuse := func(err error) (Outcome, bool) {
		be := err.(*authn.BearerError)
		o := bearerRefused(out, http.StatusUnauthorized, be.Code, Reason(be.Reason), be.Description)
		o.Header.Set("WWW-Authenticate", challenge("DPoP", be.Code, be.Description)+`, algs="`+dpopAlgs+`"`)
		return o, false
	}
	switch {
	case tok.JKT == "" && g.dpopRequired(tok.Issuer):
		return refuse(&authn.BearerError{Code: "invalid_token", Reason: authn.DPoPUnbound, Description: "tokens must be bound to a key (DPoP) here"})
	case tok.JKT == "" && scheme:
		return refuse(&authn.BearerError{Code: "invalid_token", Reason: authn.DPoPUnbound, Description: "the token is not bound to a key: send it as Bearer"})
	case tok.JKT == "":
		return out, true
	case !scheme:
		// A bound token sent as a bearer token: its proof is missing.
		return refuse(&authn.BearerError{Code: "invalid_token", Reason: authn.DPoPMissing, Description: "the token is bound to a key: send it with the DPoP scheme and a DPoP proof"})
	case len(proofs) != 1:
		return refuse(&authn.BearerError{Code: "invalid_dpop_proof", Reason: authn.DPoPMissing, Description: "send exactly one DPoP proof"})
	}
	origin, ok := g.origin(req)
	if !ok {
		return refuse(&authn.BearerError{Code: "invalid_dpop_proof", Reason: authn.DPoPMismatch, Description: "this site is only reached over HTTPS"})
	}
	target := req.Target
	if target == "" {
		target = r.RequestURI
	}
	path := r.URL.EscapedPath()
	if u, err := url.ParseRequestURI(target); err == nil {
		path = u.EscapedPath() // as the client addressed it, before any rewrite
	}
	proof, err := authn.VerifyDPoP(proofs[0], r.Method, origin+path, raw, tok.JKT, now)
	if err != nil {
		return refuse(err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	first, err := g.cfg.Grants.Store().FirstUse(ctx, "dpop\x00"+tok.Issuer+"\x00"+tok.JKT+"\x00"+proof.JTI, now, proof.Until)
	switch {
	case err != nil:
		g.log.Warn("grant store: a DPoP proof could not be checked for replay; refused", zap.Error(err))
		return out.refuse(Unavailable, http.StatusServiceUnavailable, ResultDeny, ReasonGrantsDown, &Answer{Error: "unavailable",
			Message: "DPoP proofs cannot be checked right now. Retry with a new proof in a moment."}), false
	case !first:
		return refuse(&authn.BearerError{Code: "invalid_dpop_proof", Reason: authn.DPoPReplayed, Description: "this DPoP proof was already used"})
	}
	return out, true
}

// dpopAlgs are the algorithms DPoP proofs may use, for the challenge.
const dpopAlgs = "ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512 EdDSA"

// dpopRequired reports whether the block of issuer requires DPoP.
func (g *Gate) dpopRequired(issuer string) bool {
	for _, b := range g.cfg.Bearer {
		if b.Discovery.Issuer() == issuer {
			return b.DPoPRequired
		}
	}
	return false
}

// verifyBearer verifies raw with the configured issuer it names.
func (g *Gate) verifyBearer(req *Request, raw string) (*authn.AccessToken, error) {
	iss, err := authn.ParseBearer(raw)
	if err != nil {
		return nil, err
	}
	for _, b := range g.cfg.Bearer {
		if b.Discovery.Issuer() == iss {
			return b.Verify(req.HTTP.Context(), raw)
		}
	}
	return nil, &authn.BearerError{Code: "invalid_token", Reason: authn.BearerIssuerUnknown, Description: "tokens of this issuer are not accepted"}
}

// bearerRefused answers a client with RFC 6750's challenge.
func bearerRefused(out Outcome, status int, code string, reason Reason, desc string) Outcome {
	result := ResultUnauthenticated
	if status == http.StatusForbidden {
		result = ResultDeny
	} else if status == http.StatusBadRequest {
		result = ResultReject
	}
	o := out.refuse(Deny, status, result, reason, &Answer{Error: code, Message: desc})
	o.setHeader("WWW-Authenticate", challenge("Bearer", code, desc))
	o.setHeader("Cache-Control", "no-store")
	return o
}

// challenge is a WWW-Authenticate challenge of scheme with RFC 6750's
// error and error_description, the description a quoted-string (RFC
// 9110 5.6.4) whatever it holds: it may name a value the client sent
// (an alg).
func challenge(scheme, code, desc string) string {
	return scheme + ` error="` + code + `", error_description=` + quotedString(desc)
}

// quotedString quotes s, escaping quotes and backslashes and leaving out
// control characters.
func quotedString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < ' ' || r == 0x7f:
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// tokenSession is the token's principal as the pipeline reads a session: its
// subject and person, created when the token was issued, never idle.
func tokenSession(t *authn.AccessToken, now int64) *authn.Session {
	return &authn.Session{Subject: t.Subject, Issuer: t.Issuer, Email: t.Email, Name: t.Name, Groups: t.Groups, ACR: t.ACR, AMR: t.AMR,
		AuthTime: t.AuthTime, Created: t.IssuedAt.Unix(), LastSeen: now}
}

// decideToken evaluates the policy for a token's request.
func (g *Gate) decideToken(req *Request, s *authn.Session, tok *authn.AccessToken, out *Outcome, gs []grants.Grant, grantsErr bool) (policies.Decision, error) {
	src := g.inputSource(req, s, gs, grantsErr)
	src.Principal = policies.Principal{Kind: tok.Kind(), Via: "token"}
	src.Token = &policies.Token{ClientID: tok.ClientID, Scopes: tok.Scopes}
	return g.decideFor(req, &src, out)
}
