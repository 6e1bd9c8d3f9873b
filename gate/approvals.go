package gate

import (
	"context"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// approverPage opens the session of an approvers' page (approvals,
// reviews at path) and holds it to approval_step_up; not ok, out is the
// answer (sign in, step up, or an error).
func (g *Gate) approverPage(req *Request, out Outcome, path string) (signedIn, Outcome, bool) {
	in, ok := g.pageSession(req, &out, path)
	if !ok {
		return in, out, false
	}
	if g.cfg.ApprovalStepUp != nil {
		reqs, err := g.requirementsFor(&Request{HTTP: req.HTTP, path: path}, policies.Decision{})
		if err != nil {
			return in, out.fail(err), false
		}
		if need, why := authn.FirstUnmet(reqs, in.Session, req.Start); why != "" {
			return in, g.requireStepUp(req, out, in.Session, need, why, path), false
		}
	}
	return in, out, true
}

// approvals is the approvers' page: the pending requests the policy lets
// this user decide (never their own), with approve and reject. The
// policy and the approver's step-up (approval_step_up) are checked again
// on every submit.
func (g *Gate) approvals(req *Request, out Outcome) Outcome {
	r := req.HTTP
	in, out, ok := g.approverPage(req, out, PathApprovals)
	if !ok {
		return out
	}
	sess := in.Session
	if g.cfg.Policy == nil {
		out.Kind, out.Status, out.Reason = Page, http.StatusOK, ReasonNoPolicy
		out.Answer = &Answer{Title: "Approvals",
			Message: "Nobody approves requests here: this application has no approval rules."}
		out.identify(out.Answer)
		return out
	}
	ctx, cancel, store := g.pageStore(req)
	defer cancel()
	if r.Method == http.MethodPost {
		if !g.checkForm(req, &out, &in) {
			return out
		}
		return g.decideRequest(ctx, req, out, in, store)
	}
	pending, err := store.Requests(ctx, grants.RequestFilter{App: g.cfg.App, Status: grants.Pending})
	if err != nil {
		return g.storeDown(out, err)
	}
	page := AccessPage{CSRF: g.csrf.Token(sess.ID)}
	var mine []grants.Request
	for _, q := range pending {
		ap, err := g.approval(req, &out, in, q)
		if err != nil {
			g.log.Error("approval policy error", zap.String("request_id", q.ID), zap.Error(err))
			continue
		}
		if ap.MayApprove {
			page.Requests = append(page.Requests, viewRequest(q))
			mine = append(mine, q)
		}
	}
	out.Kind, out.Status, out.Reason = Page, http.StatusOK, ReasonApprovals
	out.Answer = &Answer{Title: "Approvals", Page: "approvals", Notice: notices[r.URL.Query().Get("notice")],
		Data: page, JSON: map[string]any{"requests": mine, "csrf": page.CSRF}}
	out.identify(out.Answer)
	return out
}

// decideRequest approves or rejects one request, if the policy lets this
// user decide it.
func (g *Gate) decideRequest(ctx context.Context, req *Request, out Outcome, in signedIn, store grants.Store) Outcome {
	r, sess := req.HTTP, in.Session
	action := r.PostForm.Get("action")
	if action != "approve" && action != "reject" {
		return out.refuse(BadRequest, http.StatusBadRequest, ResultDeny, ReasonBadForm, &Answer{Error: "bad_request", Message: "Choose approve or reject."})
	}
	q, err := store.Request(ctx, r.PostForm.Get("request"))
	if errors.Is(err, grants.ErrNotFound) || (err == nil && q.App != g.cfg.App) {
		return out.refuse(BadRequest, http.StatusNotFound, ResultDeny, ReasonRequestUnknown, &Answer{Error: "not_found", Message: "There is no such request."})
	}
	if err != nil {
		return g.storeDown(out, err)
	}
	ap, err := g.approval(req, &out, in, q)
	if err != nil || !ap.MayApprove {
		why := ReasonNotAnApprover
		if err != nil {
			why = ReasonPolicyError
		}
		out.Events = append(out.Events, g.requestEvent(EventApprovalRefused, &out, &q, string(why)))
		return out.refuse(Deny, http.StatusForbidden, ResultDeny, why, &Answer{Error: "forbidden",
			Title: "Not allowed", Message: "You cannot decide this request. Nobody may approve their own requests."})
	}
	dr, grant, err := store.Decide(ctx, q.ID, grants.Decision{Approve: action == "approve", By: displayUser(sess),
		Reason: CleanText(r.PostForm.Get("note"), 200), MaxDuration: ap.MaxDuration, Now: req.Start})
	if errors.Is(err, grants.ErrAlreadyDecided) {
		return out.redirect(Redirect, http.StatusSeeOther, PathApprovals+"?notice=already_decided")
	}
	if err != nil {
		return g.storeDown(out, err)
	}
	g.cfg.Grants.Invalidate(dr.User)
	if grant != nil {
		out.Result = ResultGrantApproved
		out.Events = append(out.Events, g.grantEvent(EventGrantApproved, &out, grant, ""))
		return out.redirect(Redirect, http.StatusSeeOther, PathApprovals+"?notice=approved")
	}
	out.Result = ResultGrantRejected
	e := g.requestEvent(EventGrantRejected, &out, &dr, "")
	e.Fields = append(e.Fields, zap.String("note", dr.DecisionReason))
	out.Events = append(out.Events, e)
	return out.redirect(Redirect, http.StatusSeeOther, PathApprovals+"?notice=rejected")
}
