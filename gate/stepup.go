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
			Title: "Stronger sign-in needed", Message: "This page needs a stronger or more recent sign-in: " + need.String() + ".",
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
	rp, ok := g.relyingParty(need.Provider)
	if !ok {
		return out.fail(fmt.Errorf("step-up provider %q is not configured", need.Provider))
	}
	stepUp := &authn.StepUpState{Provider: need.Provider, ACR: need.ACR, AMR: need.AMR,
		MaxAge: int64(need.MaxAge / time.Second), Session: s.ID}
	out = g.sendToIdP(req, out, rp, origin, returnTo, authn.AuthOptions{ForceLogin: true, MaxAge: need.MaxAge, ACRValues: need.ACR}, stepUp)
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
		return g.beginLogin(req, out, rd, in.Reason.ForcesReauthentication())
	}
	sess := in.Session
	out.Audit.setUser(sess)
	u, err := url.Parse(rd)
	if err != nil {
		return out.redirect(Redirect, http.StatusFound, "/")
	}
	canon, err := authn.CanonicalPath(u.EscapedPath())
	if err != nil {
		return out.redirect(Redirect, http.StatusFound, "/")
	}
	// The page the step-up is for, as Check would see it.
	target := r.Clone(r.Context())
	target.Method = http.MethodGet
	target.URL = u
	target.RequestURI = rd
	treq := &Request{HTTP: target, Target: rd, ClientIP: req.ClientIP, TrustedProxy: req.TrustedProxy, Start: req.Start, path: canon}
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

// requirementsFor lists, combined, what a request needs: the step_up
// rules matching its path, the decision's obligation, and on the
// approvals page its own requirement (so that the step-up endpoint,
// which a 401 from that page names, starts it too).
func (g *Gate) requirementsFor(req *Request, dec policies.Decision) ([]authn.Requirement, error) {
	extra := obligation(dec)
	if g.cfg.ApprovalStepUp != nil && strings.EqualFold(req.path, PathApprovals) {
		extra = append(extra, *g.cfg.ApprovalStepUp)
	}
	return g.cfg.StepUp.For(req.forMatch(), extra...)
}

// relyingParty returns the primary IdP's relying party, or a second
// provider's.
func (g *Gate) relyingParty(provider string) (*authn.RelyingParty, bool) {
	if provider == "" {
		return g.rp, true
	}
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
		return fmt.Sprintf("The verification cannot be linked to your account: %s is missing (verified values only).", p.LinkClaim)
	}
	if p.LinkClaim == "email" && strings.EqualFold(theirs, ours) || theirs == ours {
		return ""
	}
	return fmt.Sprintf("The verification belongs to someone else: its %s does not match your account's.", p.LinkClaim)
}

// stepUpEvent is a step-up event line (besides the request's decision
// line), naming the requirement and, when refused, why.
func stepUpEvent(msg string, out *Outcome, need authn.Requirement, reason Reason) Event {
	return Event{Msg: msg, Fields: []zap.Field{zap.String("decision_id", out.Audit.ID()), zap.String("user", out.Audit.User),
		zap.String("provider", need.Provider), zap.Strings("acr", need.ACR), zap.Strings("amr", need.AMR),
		zap.Duration("max_age", need.MaxAge), zap.String("reason", string(reason))}}
}
