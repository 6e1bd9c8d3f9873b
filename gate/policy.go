package gate

import (
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// decide evaluates the policy for a request with a live session
// (pipeline step 6), recording the revision (and, with decision_log
// full, the input) in the audit. It returns the decision, or an error
// that must deny (policy_error).
func (g *Gate) decide(req *Request, s *authn.Session, out *Outcome, in signedIn) (policies.Decision, error) {
	src := g.inputSource(req, s, in.Grants.Grants, in.GrantsErr)
	return g.decideFor(req, &src, out)
}

// decideFor evaluates the serving policy for the input built from src,
// recording the revision (and, with decision_log full, the input) in the
// audit, and queues the same input for the shadow policy, if any.
func (g *Gate) decideFor(req *Request, src *policies.Source, out *Outcome) (policies.Decision, error) {
	rev := g.cfg.Policy.Current()
	out.Audit.Revision = rev.ID
	input := policies.NewInput(src, rev, g.cfg.DecisionLogFull || g.shadowNeedsWhole(rev))
	if g.cfg.DecisionLogFull {
		out.Audit.Input = input.Redacted(g.redact)
	}
	// The decision is made and logged even if the client has gone.
	dec, cached, err := rev.DecideInput(req.HTTP.Context(), input)
	out.Audit.Cached = cached
	if err == nil {
		err = g.undeclaredHeader(dec)
	}
	g.shadow(input, out, rev, dec, err)
	if out.Audit.Input == nil {
		policies.Release(input) // no log line keeps it
	}
	return dec, err
}

// undeclaredHeader refuses a decision that sets a header policy_headers
// does not declare: a policy error.
func (g *Gate) undeclaredHeader(dec policies.Decision) error {
	for name := range dec.Headers {
		if _, ok := g.policyHdrs[NormalizeHeaderName(name)]; !ok {
			return fmt.Errorf("%w: the decision sets header %q, which policy_headers does not declare", policies.ErrPolicy, name)
		}
	}
	return nil
}

// inputSource is what the policy input of a request is built from.
func (g *Gate) inputSource(req *Request, s *authn.Session, gs []grants.Grant, grantsErr bool) policies.Source {
	src := policies.Source{
		App: g.cfg.App,
		User: policies.User{Sub: s.Subject, Iss: s.Issuer, IdP: s.IdP, Email: s.Email, Name: s.Name, Groups: s.Groups,
			ACR: s.ACR, AMR: s.AMR, AuthTime: s.AuthTime},
		Created: s.Created, LastSeen: s.LastSeen, Now: req.Start,
		HTTP: req.HTTP, Path: req.path, RemoteIP: req.ClientIP,
		Headers: g.inputHdrs, HeadersLower: g.inputLower,
		Grants: policyGrants(gs), GrantsError: grantsErr,
		RevokedResources: g.revokedResources(s, gs),
	}
	if len(s.Verifications) > 0 {
		src.Verifications = func() map[string]map[string]any {
			out := make(map[string]map[string]any, len(s.Verifications))
			for name, v := range s.Verifications {
				facts := map[string]any{"acr": v.ACR, "auth_time": v.AuthTime}
				for c, val := range v.Claims {
					if c != "acr" && c != "auth_time" {
						facts[c] = val
					}
				}
				out[name] = facts
			}
			return out
		}
	}
	return src
}

// policyGrants turns active grants into the policy input's.
func policyGrants(gs []grants.Grant) []policies.Grant {
	out := make([]policies.Grant, len(gs))
	for i, g := range gs {
		out[i] = policies.Grant{Resource: g.Resource, ExpiresAt: g.ExpiresAt, ApprovedBy: g.ApprovedBy}
	}
	return out
}

// applyDecision acts on a policy decision: ok when the request may go
// on, else the refusal (403, or 503 when the deny offers JIT access that
// the grant store cannot check now).
func (g *Gate) applyDecision(req *Request, out Outcome, s *authn.Session, dec policies.Decision, err error, grantsErr bool) (Outcome, bool) {
	if err != nil {
		g.log.Error("policy error: denied", zap.String("decision_id", out.Audit.ID()), zap.String("revision", out.Audit.Revision), zap.Error(err))
		return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonPolicyError, &Answer{Error: "forbidden", Title: "Access denied",
			Message: "Your access to this page could not be checked just now, so it is blocked. Please try again; if it keeps happening, contact your helpdesk with the reference below."}), false
	}
	if dec.Allow {
		return out, true
	}
	out.Audit.PolicyReason = dec.Reason
	msg := dec.Reason
	if msg == "" {
		msg = "You do not have access to this page."
	}
	offer := dec.RequestGrant
	if offer == nil {
		return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonPolicyDeny, &Answer{Error: "forbidden", Title: "Access denied", Message: msg}), false
	}
	out.Audit.Offer = offer.Resource
	if grantsErr {
		// JIT access cannot be checked or requested: say so, not "forbidden".
		return out.refuse(Unavailable, http.StatusServiceUnavailable, ResultDeny, ReasonGrantsDown, &Answer{Error: "grants_unavailable",
			Title: "Temporarily unavailable", Message: "Temporary access to " + offer.Resource + " cannot be checked right now. Please try again in a minute."}), false
	}
	return g.denyWithOffer(req, out, s, msg, offer), false
}
