package gate

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// Check decides a request bound for the upstream (pipeline steps 3-9):
// the session and its revocation state, the user's grants, the upgrade
// origin, the allow rules, the policy and the step-up rules. Allowed, the
// Outcome carries the identity headers for the upstream and, when the
// idle clock slides, a fresh session cookie. Handle calls it for every
// path that is neither Gatehouse's nor public; a server that routes by
// itself may call it directly.
func (g *Gate) Check(req *Request) Outcome {
	out, ok := g.begin(req)
	if !ok {
		return out
	}
	return g.check(req, out)
}

func (g *Gate) check(req *Request, out Outcome) Outcome {
	r, now := req.HTTP, req.Start
	// A machine client's bearer token, where the site accepts them.
	if len(g.cfg.Bearer) > 0 {
		if token, ok, bad := bearerToken(r); ok || bad {
			return g.checkBearer(req, out, token, bad)
		}
	}
	// 3. Session, and 5. the revocation state of the session and user.
	in := g.signedIn(req)
	if in.Session == nil {
		// 4. No session.
		return g.requireLogin(req, out, in.Reason)
	}
	sess := in.Session
	out.Audit.setUser(sess)
	switch in.Reason {
	case authn.ReasonNone:
	case authn.ReasonUnverified:
		return out.refuse(Unavailable, http.StatusServiceUnavailable, ResultDeny, ReasonRevocationsDown, &Answer{Error: "unavailable",
			Title: "Temporarily unavailable", Message: "This service is starting up and cannot check sign-ins yet. Please try again in a minute."})
	default: // revoked: a logout, logout everywhere, de-provisioning, or the IdP's back-channel logout
		out.Audit.setUser(nil)
		return g.requireLogin(req, out, in.Reason)
	}
	out.viewer = sess // live: its pages show who is signed in
	out.Audit.Grants = grantResources(in.Grants.Grants)

	// Cross-site WebSocket hijacking: a page of another origin that opens
	// a socket here would ride the user's session.
	if g.crossOriginUpgrade(req) {
		return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonCrossOriginUpgrade, &Answer{Error: "forbidden",
			Message: "Connections that switch protocol (such as WebSockets) are only accepted from this site's own pages."})
	}
	if !g.entitled(sess) {
		return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonNotAllowed, &Answer{Error: "forbidden",
			Title: "Access denied", Message: "Your account is not in a team or email domain that may use this application."})
	}

	// 6. Policy.
	var dec policies.Decision
	if g.cfg.Policy != nil {
		var err error
		dec, err = g.decide(req, sess, &out, in)
		if refused, ok := g.applyDecision(req, out, sess, dec, err, in.GrantsErr); !ok {
			return refused
		}
	}

	// 7. Step-up.
	if len(g.cfg.StepUp) > 0 || dec.StepUp != nil {
		reqs, err := g.cfg.StepUp.For(req.forMatch(), obligation(dec)...)
		if err != nil {
			g.log.Error("conflicting step-up requirements", zap.String("decision_id", out.Audit.ID()), zap.Error(err))
			return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonStepUpConflict, &Answer{Error: "forbidden", Title: "Access denied",
				Message: "This page is set up in a way that no sign-in can satisfy. Please contact your helpdesk with the reference below."})
		}
		if need, why := authn.FirstUnmet(reqs, sess, now); why != "" {
			return g.requireStepUp(req, out, sess, need, why, r.URL.RequestURI())
		}
	}

	// 9. Allow: count the use, slide the idle clock on user activity,
	// set identity.
	g.noteUsage(sess, dec.Resource, req.path, in.Grants.Grants, now)
	if g.cfg.Lifetimes.ShouldSlide(sess, now) && g.isActivity(req) {
		sess.LastSeen = now.Unix()
		c, err := g.cookies.sessionCookie(sess, now)
		if err != nil {
			g.log.Error("re-issuing session cookie", zap.Error(err))
		} else {
			out.Cookies = append(out.Cookies, c)
		}
	}
	hvs, err := g.upstreamHeaders(sess, dec, now, 0)
	if err != nil {
		return out.fail(err)
	}
	out.Upstream = hvs
	out.Kind, out.Result = Allow, ResultAllow
	return out
}

// upstreamHeaders are the headers an allowed request carries to the
// upstream: the identity headers of sess, the decision's headers and the
// signed assertion, with room for extra more. One array holds the names
// and one the values, however many.
func (g *Gate) upstreamHeaders(sess *authn.Session, dec policies.Decision, now time.Time, extra int) ([]HeaderValue, error) {
	n := len(g.identity) + len(dec.Headers) + extra
	if g.cfg.Asserter != nil {
		n++
	}
	hvs, vals := make([]HeaderValue, 0, n), make([]string, 0, n)
	set := func(name, v string) {
		vals = append(vals, v)
		hvs = append(hvs, HeaderValue{name, vals[len(vals)-1 : len(vals) : len(vals)]})
	}
	for _, ih := range g.identity {
		if v := g.claimValue(sess, ih.Claim); v != "" {
			set(ih.Header, v)
		}
	}
	for name, v := range dec.Headers {
		set(g.policyHdrs[NormalizeHeaderName(name)], headerValue(v))
	}
	if g.cfg.Asserter != nil {
		token, err := g.cfg.Asserter.Token(sess, now)
		if err != nil {
			return nil, fmt.Errorf("signing the assertion: %w", err)
		}
		set(g.assertion, token)
	}
	return hvs, nil
}

// obligation is the step-up a decision asks for, if any.
func obligation(dec policies.Decision) []authn.Requirement {
	if s := dec.StepUp; s != nil {
		return []authn.Requirement{{ACR: s.ACR, AMR: s.AMR, MaxAge: s.MaxAge}}
	}
	return nil
}

// crossOriginUpgrade reports whether the request is a protocol upgrade
// (WebSocket, h2c, extended CONNECT) sent by a browser from another
// origin: its Origin is neither this site's (external_url, else the
// request's scheme and host) nor an upgrade_origins entry. "null", an
// unreadable or a repeated Origin counts as another. A request without
// Origin is not from a browser (browsers always send it on upgrades) and
// goes on like any other.
func (g *Gate) crossOriginUpgrade(req *Request) bool {
	r := req.HTTP
	if !authn.IsUpgrade(r) {
		return false
	}
	vals, ok := r.Header["Origin"]
	if !ok {
		return false
	}
	if len(vals) != 1 {
		return true
	}
	o, err := authn.NormalizeOrigin(vals[0])
	if err != nil {
		return true
	}
	if g.upgradeOK[o] {
		return false
	}
	own, ok := g.origin(req)
	if !ok {
		return true
	}
	own, err = authn.NormalizeOrigin(own)
	return err != nil || o != own
}

// isActivity reports whether the request counts as the user's activity,
// which keeps the session from going idle.
func (g *Gate) isActivity(req *Request) bool {
	if g.cfg.IdleIgnore != nil && g.cfg.IdleIgnore.MatchPath(req.forMatch()) {
		return false
	}
	return g.cfg.IdleAnyRequest || authn.IsUserActivity(req.HTTP)
}

// entitled applies allow_groups and allow_email_domains.
func (g *Gate) entitled(s *authn.Session) bool {
	if len(g.allGroups) == 0 && len(g.domains) == 0 {
		return true
	}
	for _, grp := range s.Groups {
		if g.allGroups[grp] {
			return true
		}
	}
	if at := strings.LastIndexByte(s.Email, '@'); at >= 0 {
		if g.domains[strings.ToLower(s.Email[at+1:])] {
			return true
		}
	}
	return false
}

// claimValue is a claim of the session as an identity header carries it.
func (g *Gate) claimValue(s *authn.Session, claim string) string {
	var v string
	switch claim {
	case "sub":
		v = s.Subject
	case "iss":
		v = s.Issuer
	case "email":
		v = s.Email
	case "name":
		v = s.Name
	case "groups":
		v = joinList(s.Groups)
	case "acr":
		v = s.ACR
	case "amr":
		v = joinList(s.AMR)
	case "auth_time":
		if s.AuthTime > 0 {
			v = strconv.FormatInt(s.AuthTime, 10)
		}
	default:
		v = s.Extra[claim]
	}
	return headerValue(v)
}
