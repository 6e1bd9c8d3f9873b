package gate

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// idpErrorRE is the form of an IdP error code that the audit log and the
// page may repeat (idp_<code>).
var idpErrorRE = regexp.MustCompile(`^[a-z_]{1,64}$`)

// callback completes a sign-in: the state must match a sign-in slot of
// this browser that has not been used, the answer must come from the IdP
// that was asked, the code is exchanged with the PKCE verifier, and the
// ID token is verified in full before a session is made. A step-up's
// callback upgrades the session instead.
func (g *Gate) callback(req *Request, out Outcome) Outcome {
	r, now := req.HTTP, req.Start
	out.Result = ResultLoginFailed
	q := r.URL.Query()
	if g.cookies.duplicate(r) {
		return loginFailed(out, http.StatusBadRequest, Reason(authn.ReasonDuplicate),
			"Your browser sent one of this site's sign-in cookies twice. Clear this site's cookies, then sign in again.")
	}
	st, slot, found := g.cookies.pending.Find(r, q.Get("state"))
	if len(q["state"]) != 1 {
		found = authn.LoginMalformed
	}
	switch found {
	case authn.LoginMalformed:
		return loginFailed(out, http.StatusBadRequest, ReasonStateMissing, "This sign-in link is incomplete. Please start again.")
	case authn.LoginUnknown:
		return loginFailed(out, http.StatusBadRequest, ReasonStateUnknown,
			"This sign-in was not started in this browser, or it expired. Please start again.")
	case authn.LoginSpent:
		return loginFailed(out, http.StatusBadRequest, ReasonStateReplayed, "This sign-in was already used. Please start again.")
	case authn.LoginSuperseded:
		if q.Has("error") || g.used().Seen(st.State, now) {
			return loginFailed(out, http.StatusBadRequest, ReasonStateSuperseded, "A newer sign-in in this browser replaced this one. Please start again.")
		}
		// A newer sign-in of this browser took this one's slot: restart
		// it where it was going. With a session by now (the newer sign-in
		// finished), that is just a redirect; else one more trip to the
		// IdP, which its single sign-on usually answers at once.
		out.Result, out.Reason = ResultLogin, ReasonLoginSuperseded
		restart := PathLogin + "?rd="
		if st.StepUp != nil {
			restart = PathStepUp + "?rd="
		} else if len(g.idps) > 1 {
			restart = PathLogin + "?idp=" + url.QueryEscape(st.IdP) + "&rd="
		}
		return noReferrer(out.redirect(Login, http.StatusFound, restart+url.QueryEscape(st.Return)))
	}
	// The sign-in is spent whatever happens next.
	if name, value, err := g.cookies.pending.Spend(st); err == nil {
		out.Cookies = append(out.Cookies, g.cookies.loginCookie(name, value))
	} else {
		out.Cookies = append(out.Cookies, g.cookies.loginCookie(slot, ""))
	}
	if g.used().Seen(st.State, now) {
		return loginFailed(out, http.StatusBadRequest, ReasonStateReplayed, "This sign-in was already used. Please start again.")
	}
	// The answer must come from the IdP this sign-in was sent to (the
	// state records it), and the code goes to that IdP's client only.
	idp, rp := g.asked(st)
	if rp == nil {
		return loginFailed(out, http.StatusBadRequest, ReasonProviderUnknown, "This sign-in service is no longer set up here. Please start again.")
	}
	// RFC 9207: an IdP that names itself must be the one asked, so an
	// answer from another IdP (mix-up attack) is refused; an IdP that
	// says it always names itself must have done so.
	switch iss, named := q["iss"]; {
	case named && (len(iss) != 1 || iss[0] != rp.Discovery.Issuer()):
		return loginFailed(out, http.StatusBadRequest, ReasonIssuerMismatch, "This sign-in came back from another sign-in service than the one asked. Please start again.")
	case !named && namesItself(r.Context(), rp):
		return loginFailed(out, http.StatusBadRequest, ReasonIssuerMissing, "This sign-in came back without saying where from. Please start again.")
	}
	if e := q.Get("error"); e != "" {
		code := ReasonIdPError
		if idpErrorRE.MatchString(e) {
			code = Reason("idp_" + e)
		}
		return loginFailed(out, http.StatusUnauthorized, code, "The sign-in service did not sign you in. Please try again.")
	}
	code := q.Get("code")
	if code == "" || len(code) > 2048 {
		return loginFailed(out, http.StatusBadRequest, ReasonCodeMissing, "The sign-in service sent back an incomplete answer. Please try again.")
	}
	if st.StepUp != nil {
		return g.finishStepUp(req, out, code, st, rp)
	}

	id, err := rp.Finish(r.Context(), code, st)
	if err != nil {
		var le *authn.LoginError
		if errors.As(err, &le) {
			g.tokenRefused(&out, rp.Discovery.Issuer(), le)
			return loginFailed(out, http.StatusUnauthorized, Reason(le.Reason), loginWords(le))
		}
		return g.idpDown(out, rp, err)
	}
	g.used().Mark(st.State, time.Unix(st.Started, 0), now)
	out.Audit.User, out.Audit.Iss, out.Audit.Email, out.Audit.Refused = id.Subject, id.Issuer, id.Email, id.Refused
	if !idp.allows(id.Email) {
		// A partner's IdP signs in its own people, never an address of
		// a domain it was not given (nor anyone without a verified one).
		return loginFailed(out, http.StatusForbidden, ReasonDomainNotAllowed,
			"This sign-in service cannot sign in an account with this email address here. Sign in with your own organisation's sign-in service.")
	}
	switch refused, err := g.deprovisioned(r.Context(), id); {
	case err != nil:
		g.log.Error("SCIM: the grant store cannot say whether this user is active: sign-in refused", zap.String("user", id.Subject), zap.Error(err))
		return out.refuse(Unavailable, http.StatusServiceUnavailable, ResultLoginFailed, ReasonDeprovisionUnsure, &Answer{Error: "login_failed",
			Title: "Sign-in failed", Message: "Your sign-in cannot be checked right now. Please try again in a minute.", ActionURL: "/", ActionText: "Try again"})
	case refused:
		return loginFailed(out, http.StatusForbidden, ReasonDeprovisioned,
			"Your account has been deactivated by your organisation, so you cannot sign in here. If you think this is a mistake, contact your helpdesk with the reference below.")
	}
	sess := authn.NewSession(id, now)
	sess.IdP = idp.Name
	sess.IdPSession = idpSession(id)
	c, err := g.cookies.sessionCookie(sess, now)
	if err != nil {
		g.log.Error("session does not fit in a cookie", zap.String("user", id.Subject), zap.Int("groups", len(id.Groups)), zap.Error(err))
		return loginFailed(out, http.StatusInternalServerError, ReasonSessionTooLarge,
			"Your account has too much information to fit in this site's sign-in cookie (for example, very many groups). Please contact your helpdesk with the reference below.")
	}
	out.Cookies = append(out.Cookies, c)
	if c, err := g.cookies.idTokenCookie(idp.Name, id.RawIDToken); err == nil {
		out.Cookies = append(out.Cookies, c)
	} else {
		g.log.Warn("ID token too large to keep for logout; logout will not send id_token_hint", zap.String("user", id.Subject))
	}
	g.noteEmail(r.Context(), id)
	out.Result, out.Reason = ResultLoginOK, ReasonNone
	return noReferrer(out.redirect(Redirect, http.StatusFound, authn.SafeReturnPath(st.Return)))
}

// asked is the IdP a sign-in state was sent to, and its relying party:
// a sign-in IdP (idp set), or a step-up's second provider. rp is nil when
// that IdP is no longer configured.
func (g *Gate) asked(st *authn.LoginState) (idp *signInIdP, rp *authn.RelyingParty) {
	if st.StepUp != nil && st.StepUp.Provider != "" {
		rp, _ = g.relyingParty(st.StepUp.Provider)
		return nil, rp
	}
	if idp = g.idpNamed(st.IdP); idp == nil {
		return nil, nil
	}
	return idp, idp.rp
}

// namesItself reports whether rp's IdP says it names itself in every
// authorization response (RFC 9207). An IdP that cannot be asked now
// says nothing: the code exchange will find it down.
func namesItself(ctx context.Context, rp *authn.RelyingParty) bool {
	m, err := rp.Discovery.Get(ctx)
	return err == nil && m.IssResponse
}

// used is the record of used sign-in states (one for the site: the first
// IdP's, shared with every site of its issuer).
func (g *Gate) used() *authn.UsedStates { return g.idps[0].IdP.Used }

// tokenRefused records what the IdP said when its token endpoint refused
// a code (a wrong client secret, a redirect URI it does not know, a code
// it already redeemed): in the audit line, and in a WARN line for the
// operator, since a misconfiguration fails every login the same way.
func (g *Gate) tokenRefused(out *Outcome, issuer string, le *authn.LoginError) {
	if le.IdP == nil {
		return
	}
	out.Audit.IdP = le.IdP
	g.log.Warn("the identity provider refused the authorization code at its token endpoint",
		zap.String("app", g.cfg.App), zap.String("issuer", issuer), zap.Int("status", le.IdP.Status),
		zap.String("error", le.IdP.Code), zap.String("error_description", le.IdP.Description))
}

// loginFailed refuses a sign-in answer with a page that offers to start
// again.
func loginFailed(out Outcome, status int, reason Reason, msg string) Outcome {
	return out.refuse(Deny, status, ResultLoginFailed, reason, &Answer{Error: "login_failed",
		Title: "Sign-in failed", Message: msg, ActionURL: "/", ActionText: "Try again"})
}

// loginWords are what a refused sign-in answer tells the user: what they
// can do about it. The authn reason (in the answer's reason and the audit
// line) says what exactly was wrong, for whoever investigates.
func loginWords(le *authn.LoginError) string {
	switch le.Reason {
	case "state_expired":
		return "The sign-in took too long. Please try again."
	case "not_reauthenticated", "stale_auth_time":
		return "The sign-in service did not ask you to sign in again, as this page needs. Please try again; if it happens again, contact your helpdesk with the reference below."
	case "auth_time_too_old":
		return "The sign-in service used an earlier sign-in instead of a recent one. Please try again."
	case "weaker_acr", "missing_amr":
		return "The sign-in was not strong enough for this page (for example, no one-time code was asked for). Please try again; if it happens again, contact your helpdesk with the reference below."
	case "code_rejected":
		return "The sign-in service did not accept this sign-in. Please try again."
	}
	return "The answer from the sign-in service could not be checked, so you are not signed in. Please try again; if it happens again, contact your helpdesk with the reference below."
}

// noReferrer keeps a callback's code and state out of the Referer of the
// page the browser goes to next, and out of caches.
func noReferrer(out Outcome) Outcome {
	out.setHeader("Cache-Control", "no-store")
	out.setHeader("Referrer-Policy", "no-referrer")
	return out
}

// finishStepUp completes a step-up sign-in at the callback: the session
// it was started for must still be the browser's, the new identity must
// be the same user (primary IdP) or link to it (second provider), and it
// must prove what was asked. The session is then upgraded in place.
func (g *Gate) finishStepUp(req *Request, out Outcome, code string, st *authn.LoginState, rp *authn.RelyingParty) Outcome {
	r, now := req.HTTP, req.Start
	su := st.StepUp
	need := su.Requirement()
	refused := func(status int, reason Reason, msg string) Outcome {
		out.Events = append(out.Events, stepUpEvent(EventStepUpRefused, &out, need, reason))
		return loginFailed(out, status, reason, msg)
	}
	in := g.signedIn(req)
	if !in.live() || in.Session.ID != su.Session {
		return refused(http.StatusUnauthorized, ReasonSessionChanged, "You were signed out, or signed in as someone else, during the extra check. Please sign in and try again.")
	}
	sess := in.Session
	out.signedInAs(sess)
	if su.Provider == "" && st.IdP != sess.IdP {
		// A step-up is done at the IdP the user signed in with.
		return refused(http.StatusForbidden, ReasonIdentityMismatch, "You signed in as someone else. The extra check must be done by the person already signed in.")
	}
	id, err := rp.Finish(r.Context(), code, st)
	if id != nil {
		out.Audit.Refused = id.Refused
	}
	if err != nil {
		var le *authn.LoginError
		if errors.As(err, &le) {
			g.tokenRefused(&out, rp.Discovery.Issuer(), le)
			return refused(http.StatusForbidden, Reason(le.Reason), loginWords(le))
		}
		return g.idpDown(out, rp, err)
	}
	if su.Provider == "" && (id.Subject != sess.Subject || id.Issuer != sess.Issuer) {
		return refused(http.StatusForbidden, ReasonIdentityMismatch, "You signed in as someone else. The extra check must be done by the person already signed in.")
	}
	if su.Provider != "" {
		if why := g.link(su.Provider, id, sess); why != "" {
			return refused(http.StatusForbidden, ReasonLinkMismatch, why)
		}
	}
	if err := authn.AcceptStepUp(id, need, time.Unix(st.Started, 0), now); err != nil {
		var le *authn.LoginError
		if !errors.As(err, &le) {
			return out.fail(err)
		}
		return refused(http.StatusForbidden, Reason(le.Reason), loginWords(le))
	}
	g.used().Mark(st.State, time.Unix(st.Started, 0), now)
	if su.Provider == "" {
		sess.ACR, sess.AMR, sess.AuthTime = id.ACR, id.AMR, id.AuthTime
		if id.SID != "" {
			// The IdP may have started a new session for the step-up:
			// its back-channel logout names the new one.
			sess.IdPSession = idpSession(id)
		}
		if c, err := g.cookies.idTokenCookie(sess.IdP, id.RawIDToken); err == nil {
			out.Cookies = append(out.Cookies, c)
		}
	} else {
		claims := map[string]string{}
		for _, c := range g.cfg.Providers[su.Provider].Claims {
			if v, ok := id.Extra[c]; ok {
				claims[c] = v
			}
		}
		// The opened session's map is shared with other requests.
		sess.Verifications = maps.Clone(sess.Verifications)
		if sess.Verifications == nil {
			sess.Verifications = map[string]authn.Verification{}
		}
		sess.Verifications[su.Provider] = authn.Verification{ACR: id.ACR, AMR: id.AMR, AuthTime: id.AuthTime, Claims: claims}
	}
	sess.LastSeen = now.Unix()
	c, err := g.cookies.sessionCookie(sess, now)
	if err != nil {
		return loginFailed(out, http.StatusInternalServerError, ReasonSessionTooLarge, "The checked details do not fit in this site's sign-in cookie. Please contact your helpdesk with the reference below.")
	}
	out.Cookies = append(out.Cookies, c)
	out.Result, out.Reason = ResultStepUpOK, ReasonNone
	out.Events = append(out.Events, stepUpEvent(EventStepUpSucceeded, &out, need, ReasonNone))
	return noReferrer(out.redirect(Redirect, http.StatusFound, authn.SafeReturnPath(st.Return)))
}
