package policies

import (
	"context"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"
)

// Explain modes, as in `opa eval --explain`.
const (
	ExplainOff   = "off"
	ExplainNotes = "notes" // only trace() notes
	ExplainFails = "fails" // the expressions that failed: why a rule did not hold
	ExplainFull  = "full"  // every step, with locations
)

// Explanation is one evaluation with the trace that produced it.
type Explanation struct {
	Query    string
	Revision string
	// Value is the query's raw value (nil when undefined).
	Value any
	// Decision is set for the decision query; Approval for the approval
	// query; Err when the value is no valid answer (the pipeline denies).
	Decision *Decision
	Approval *Approval
	Err      error
	// Trace is the evaluation trace in the chosen mode, with locations.
	Trace string
}

// Explain evaluates query (DefaultQuery when empty) for input, recording
// the evaluation, so a security engineer can see why a decision came out
// as it did. It never uses the prepared hot-path query.
func (r *Revision) Explain(ctx context.Context, query string, input ast.Value, mode string) (*Explanation, error) {
	if query == "" {
		query = r.opts.Query
	}
	ref, err := ast.ParseRef(query)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", query, err)
	}
	pq, err := r.prepare(ctx, ref)
	if err != nil {
		return nil, err
	}
	buf := topdown.NewBufferTracer()
	ex := &Explanation{Query: query, Revision: r.ID}
	ex.Value, ex.Err = r.eval(ctx, &pq, input, []rego.EvalOption{rego.EvalQueryTracer(buf)})
	if ex.Err == nil {
		switch query {
		case r.opts.Query:
			d, err := parseDecision(ex.Value)
			ex.Decision, ex.Err = &d, err
		case r.opts.ApprovalQuery:
			a, err := parseApproval(ex.Value)
			ex.Approval, ex.Err = &a, err
		}
	}
	events := []*topdown.Event(*buf)
	switch mode {
	case ExplainOff, "":
		return ex, nil
	case ExplainNotes:
		events = lineage.Notes(events)
	case ExplainFails:
		events = lineage.Fails(events)
	case ExplainFull:
		events = lineage.Full(events)
	default:
		return nil, fmt.Errorf("explain mode %q: want off, notes, fails or full", mode)
	}
	var sb strings.Builder
	topdown.PrettyTraceWithLocation(&sb, events)
	ex.Trace = sb.String()
	return ex, nil
}
