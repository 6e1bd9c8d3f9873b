package gate

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// requireStepUp answers a request whose session lacks a requirement
// (pipeline step 7): navigations are sent to the provider, anything else
// gets 401 JSON that names the requirement and the URL that starts the
// step-up.
func (g *Gate) requireStepUp(req *Request, out Outcome, s *authn.Session, need authn.Requirement, why, returnTo string) Outcome {
	if !authn.IsNavigation(req.HTTP) {
		start := PathStepUp + "?rd=" + url.QueryEscape(authn.SafeReturnPath(returnTo))
		a := &Answer{Error: "step_up_required", Reason: why,
			Title: "Please confirm it is you", Message: stepUpWords(need),
			StepUpURL: start, ActionURL: start, ActionText: "Sign in again",
			Requirement: &RequirementJSON{Provider: need.Provider, ACR: need.ACR, AMR: need.AMR}}
		if need.MaxAge > 0 {
			a.Requirement.MaxAge = need.MaxAge.String()
		}
		return out.refuse(StepUp, http.StatusUnauthorized, ResultStepUpRequired, stepUpReason(why), a)
	}
	out.Result, out.Reason = ResultStepUp, stepUpReason(why)
	return g.beginStepUp(req, out, s, need, returnTo)
}

// beginStepUp sends the browser to the provider with acr_values, max_age
// and prompt=login, remembering what the sign-in must prove.
func (g *Gate) beginStepUp(req *Request, out Outcome, s *authn.Session, need authn.Requirement, returnTo string) Outcome {
	origin, ok := g.origin(req)
	if !ok {
		return httpsRequired(out)
	}
	// At the second provider named, or at the IdP the user signed in with.
	var rp *authn.RelyingParty
	if need.Provider != "" {
		rp, _ = g.relyingParty(need.Provider)
	} else if idp := g.idpNamed(s.IdP); idp != nil {
		rp = idp.rp
	}
	if rp == nil {
		return out.fail(fmt.Errorf("step-up provider %q (or IdP %q) is not configured", need.Provider, s.IdP))
	}
	stepUp := &authn.StepUpState{Provider: need.Provider, ACR: need.ACR, AMR: need.AMR,
		MaxAge: int64(need.MaxAge / time.Second), Session: s.ID}
	out = g.sendToIdP(req, out, s.IdP, rp, origin, returnTo, authn.AuthOptions{ForceLogin: true, MaxAge: need.MaxAge, ACRValues: need.ACR}, stepUp)
	if out.Kind == StepUp {
		out.Events = append(out.Events, stepUpEvent(EventStepUpStarted, &out, need, ReasonNone))
	}
	return out
}

// stepUp is /.gatehouse/stepup?rd=<path>: it starts the step-up that rd
// needs (the URL a 401 names), or goes straight to rd when none is
// missing.
func (g *Gate) stepUp(req *Request, out Outcome) Outcome {
	r := req.HTTP
	rd := authn.SafeReturnPath(r.URL.Query().Get("rd"))
	in := g.signedIn(req)
	if !in.live() {
		out.Result, out.Reason = ResultLogin, Reason(in.Reason)
		return g.startLogin(req, out, rd, in.Reason.ForcesReauthentication())
	}
	sess := in.Session
	out.signedInAs(sess)
	treq, ok := targetRequest(req, rd)
	if !ok {
		return out.redirect(Redirect, http.StatusFound, "/")
	}
	var dec policies.Decision
	if g.cfg.Policy != nil {
		// A decision the policy cannot make asks for no step-up here:
		// the page itself will be denied with policy_error.
		var perr error
		if dec, perr = g.decide(treq, sess, &out, in); perr != nil {
			g.log.Warn("policy error while looking for a step-up; the page itself will be denied", zap.String("decision_id", out.Audit.ID()), zap.Error(perr))
			dec = policies.Decision{}
		}
	}
	if reqs, err := g.requirementsFor(treq, dec); err == nil {
		if need, why := authn.FirstUnmet(reqs, sess, req.Start); why != "" {
			out.Result, out.Reason = ResultStepUp, stepUpReason(why)
			return g.beginStepUp(req, out, sess, need, rd)
		}
	}
	out.Result, out.Reason = ResultInternal, ReasonStepUpNotNeeded
	return out.redirect(Redirect, http.StatusFound, rd)
}

// targetRequest is a navigation to rd (a same-origin path) as Check
// would see it: the page a step-up or a sign-in is for.
func targetRequest(req *Request, rd string) (*Request, bool) {
	u, err := url.Parse(rd)
	if err != nil {
		return nil, false
	}
	canon, err := authn.CanonicalPath(u.EscapedPath())
	if err != nil {
		return nil, false
	}
	r := req.HTTP
	target := r.Clone(r.Context())
	target.Method = http.MethodGet
	target.URL = u
	target.RequestURI = rd
	return &Request{HTTP: target, Target: rd, ClientIP: req.ClientIP, TrustedProxy: req.TrustedProxy, Start: req.Start, path: canon}, true
}

// upFront is what the first sign-in for returnTo can ask of the primary
// IdP at once, so that the user signs in once rather than twice (a
// sign-in, then a step-up): the requirement of the step_up rules that
// match its path, and of the approvals page. A policy's obligation is
// known only once the policy has run, after the sign-in, and a step-out
// to a second provider is a sign-in of its own: neither is asked here.
func (g *Gate) upFront(req *Request, returnTo string) (authn.Requirement, bool) {
	if len(g.cfg.StepUp) == 0 && g.cfg.ApprovalStepUp == nil {
		return authn.Requirement{}, false
	}
	treq, ok := targetRequest(req, authn.SafeReturnPath(returnTo))
	if !ok {
		return authn.Requirement{}, false
	}
	reqs, err := g.requirementsFor(treq, policies.Decision{})
	if err != nil {
		return authn.Requirement{}, false // the page itself will say so
	}
	for _, need := range reqs {
		if need.Provider == "" {
			return need, true
		}
	}
	return authn.Requirement{}, false
}

// requirementsFor lists, combined, what a request needs: the step_up
// rules matching its path, the decision's obligation, and on the
// approvals page its own requirement (so that the step-up endpoint,
// which a 401 from that page names, starts it too).
func (g *Gate) requirementsFor(req *Request, dec policies.Decision) ([]authn.Requirement, error) {
	extra := obligation(dec)
	if g.cfg.ApprovalStepUp != nil && (strings.EqualFold(req.path, PathApprovals) || strings.EqualFold(req.path, PathReviews)) {
		extra = append(extra, *g.cfg.ApprovalStepUp)
	}
	return g.cfg.StepUp.For(req.forMatch(), extra...)
}

// stepUpWords says in plain words what a step-up asks of the user (the
// requirement itself is in the answer's JSON).
func stepUpWords(need authn.Requirement) string {
	switch {
	case need.Provider != "":
		return "This page needs you to confirm who you are with " + need.Provider + "."
	case len(need.ACR) > 0 || len(need.AMR) > 0:
		return "This page needs you to sign in again with a stronger method, such as a one-time code."
	case need.MaxAge > 0:
		return "This page needs you to have signed in within the last " + humanDuration(need.MaxAge) + ". Please sign in again."
	}
	return "This page needs you to sign in again."
}

// relyingParty returns a second provider's relying party.
func (g *Gate) relyingParty(provider string) (*authn.RelyingParty, bool) {
	p := g.cfg.Providers[provider]
	if p == nil || p.rp == nil {
		return nil, false
	}
	return p.rp, true
}

// link says why a second provider's identity does not belong to the
// session's user, or "" when the link claim matches.
func (g *Gate) link(provider string, id *authn.Identity, s *authn.Session) string {
	p := g.cfg.Providers[provider]
	var theirs, ours string
	if p.LinkClaim == "email" {
		theirs, ours = id.Email, s.Email
	} else {
		theirs, ours = id.Extra[p.LinkClaim], g.claimValue(s, p.LinkClaim)
	}
	if theirs == "" || ours == "" {
		return fmt.Sprintf("This check cannot be matched to your account: one of the two has no verified %s.", p.LinkClaim)
	}
	if p.LinkClaim == "email" && strings.EqualFold(theirs, ours) || theirs == ours {
		return ""
	}
	return fmt.Sprintf("This check was done by someone else: its %s is not your account's.", p.LinkClaim)
}

// stepUpEvent is a step-up event line (besides the request's decision
// line), naming the requirement and, when refused, why.
func stepUpEvent(msg string, out *Outcome, need authn.Requirement, reason Reason) Event {
	return Event{Msg: msg, Fields: []zap.Field{zap.String("decision_id", out.Audit.ID()), zap.String("user", out.Audit.User),
		zap.String("provider", need.Provider), zap.Strings("acr", need.ACR), zap.Strings("amr", need.AMR),
		zap.Duration("max_age", need.MaxAge), zap.String("reason", string(reason))}}
}
