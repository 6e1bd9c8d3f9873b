package gate

import (
	"maps"
	"slices"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/policies"
)

// The shadow policy (docs/policy-changes.md): a candidate policy decides
// every request the serving policy decides, on the same input, and is
// never enforced. The request only queues a copy of its input
// (policies.Shadow.Submit never blocks); a shadow worker decides the
// candidate's decision later, and each disagreement becomes an event line
// of its own, since the request's decision line is written by then.

// EventPolicyShadowDisagreed is the event line of a request the
// candidate policy would have decided otherwise.
const EventPolicyShadowDisagreed = "policy shadow disagreed"

// ShadowVerdict is what the shadow policy made of one request: dropped
// (the candidate's queue was full: reported on the request path), or
// decided, with the changes the candidate would have made (none when it
// agreed) and, for a disagreement, its event line (reported on a shadow
// worker).
type ShadowVerdict struct {
	Dropped bool
	Changes []policies.Change
	Event   *Event
}

// shadowReporter hands the candidate's decisions to the server.
type shadowReporter struct{ g *Gate }

// wideInput remembers, for a pair of revisions, whether the candidate
// reads parts of the input the serving policy's input leaves out.
type wideInput struct {
	serving, candidate *policies.Revision
	wide               bool
}

// shadowNeedsWhole reports whether the input built for the serving
// revision must be whole for the candidate to see what it reads (its
// query, headers or verifications). Decided once per pair of revisions.
func (g *Gate) shadowNeedsWhole(serving *policies.Revision) bool {
	if g.cfg.PolicyShadow == nil {
		return false
	}
	cand := g.cfg.PolicyShadow.Engine().Current()
	if w := g.shadowWide.Load(); w != nil && w.serving == serving && w.candidate == cand {
		return w.wide
	}
	w := &wideInput{serving: serving, candidate: cand, wide: cand.ReadsBeyond(serving)}
	g.shadowWide.Store(w)
	return w.wide
}

// shadow queues the request's input and the serving decision for the
// candidate policy, when there is one. It must run before the input is
// released: the job copies it.
func (g *Gate) shadow(input *policies.Input, out *Outcome, rev *policies.Revision, dec policies.Decision, err error) {
	if g.cfg.PolicyShadow == nil {
		return
	}
	job := policies.ShadowJob{Input: *input, Serving: dec, ServingErr: err, ServingRevision: rev.ID,
		DecisionID: out.Audit.ID(), Report: g.shadowRep}
	if !g.cfg.PolicyShadow.Submit(&job) && g.cfg.OnShadow != nil {
		g.cfg.OnShadow(ShadowVerdict{Dropped: true})
	}
}

// ShadowDecided compares the candidate's decision with the serving one
// (a header the site does not declare is an error for the candidate as
// for the serving policy) and reports the verdict.
func (r *shadowReporter) ShadowDecided(job *policies.ShadowJob, cand *policies.Revision, d policies.Decision, err error) {
	if err == nil {
		err = r.g.undeclaredHeader(d)
	}
	v := ShadowVerdict{Changes: policies.Compare(job.Serving, job.ServingErr, d, err)}
	if len(v.Changes) > 0 {
		e := shadowEvent(job, cand.ID, d, err, v.Changes)
		v.Event = &e
	}
	if r.g.cfg.OnShadow != nil {
		r.g.cfg.OnShadow(v)
	}
}

// shadowEvent is the event line of a disagreement: the request (as its
// decision line names it), what the serving and the candidate policy
// decided, and the changes.
func shadowEvent(job *policies.ShadowJob, candRev string, cand policies.Decision, candErr error, changes []policies.Change) Event {
	in := &job.Input
	names := make([]string, len(changes))
	for i, c := range changes {
		names[i] = string(c)
	}
	fields := []zap.Field{
		zap.String("decision_id", job.DecisionID),
		zap.String("user", in.User.Sub), zap.String("iss", in.User.Iss),
		zap.String("method", in.Request.Method), zap.String("path", in.Request.Path),
		zap.Strings("changes", names),
		zap.String("serving_revision", job.ServingRevision),
		zap.String("candidate_revision", candRev),
	}
	fields = append(fields, decisionFields("serving", job.Serving, job.ServingErr)...)
	fields = append(fields, decisionFields("candidate", cand, candErr)...)
	for _, c := range changes {
		switch c {
		case policies.ChangeHeadersChanged:
			fields = append(fields, zap.Strings("serving_headers", headerPairs(job.Serving.Headers)),
				zap.Strings("candidate_headers", headerPairs(cand.Headers)))
		case policies.ChangeOfferChanged:
			fields = append(fields, zap.String("serving_offer", offerText(job.Serving.RequestGrant)),
				zap.String("candidate_offer", offerText(cand.RequestGrant)))
		}
	}
	return Event{Msg: EventPolicyShadowDisagreed, Fields: fields}
}

// decisionFields are one side's decision: <side>_result (allow, deny, or
// error: it could not decide, which denies), <side>_reason (the policy's
// own text), <side>_step_up and <side>_error when there is one.
func decisionFields(side string, d policies.Decision, err error) []zap.Field {
	result := "deny"
	switch {
	case err != nil:
		return []zap.Field{zap.String(side+"_result", "error"), zap.String(side+"_error", err.Error())}
	case d.Allow:
		result = "allow"
	}
	fields := []zap.Field{zap.String(side+"_result", result), zap.String(side+"_reason", d.Reason)}
	if d.StepUp != nil {
		fields = append(fields, zap.String(side+"_step_up", d.StepUp.String()))
	}
	return fields
}

// headerPairs lists a decision's headers as Name=value, sorted.
func headerPairs(h map[string]string) []string {
	out := make([]string, 0, len(h))
	for _, name := range slices.Sorted(maps.Keys(h)) {
		out = append(out, name+"="+h[name])
	}
	return out
}

func offerText(o *policies.GrantOffer) string {
	if o == nil {
		return ""
	}
	return o.Resource + " for up to " + o.MaxDuration.String()
}

var _ policies.ShadowReporter = (*shadowReporter)(nil)

// shadowState is the Gate's part of the shadow policy.
type shadowState struct {
	shadowRep  *shadowReporter
	shadowWide atomic.Pointer[wideInput]
}
