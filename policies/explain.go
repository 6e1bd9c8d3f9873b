package policies

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"
)

// Raw trace modes, as in `opa eval --explain`.
const (
	TraceOff   = "off"
	TraceNotes = "notes" // only trace() notes
	TraceFails = "fails" // the expressions that failed
	TraceFull  = "full"  // every step, with locations
)

// Explanation is one evaluation, the rules that decided it and, on
// request, OPA's raw trace.
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
	// Rules are the rules the query's value came from, each with the
	// rules it consulted: the explanation in the policy's own terms.
	Rules []*RuleTrace
	// Trace is OPA's raw evaluation trace in the chosen mode (empty when
	// off). It shows compiled expressions, not the policy's text.
	Trace string
}

// RuleTrace is how one rule of the policy fared in an evaluation: whether
// its body held, and if not where it stopped, with the rules its body
// consulted. A rule evaluated several times from one place (a function
// called for each element, say) is one RuleTrace: it held if it held
// once.
type RuleTrace struct {
	// Rule is the document the rule defines, such as
	// data.gatehouse.allow.
	Rule string `json:"rule"`
	// Location is the rule's file (relative to the policy directory) and
	// line.
	Location string `json:"location"`
	Held     bool   `json:"held"`
	// Failed lists the expressions of the body that did not hold, as
	// written in the policy, when the rule did not hold.
	Failed []Failure    `json:"failed,omitempty"`
	Rules  []*RuleTrace `json:"rules,omitempty"`
	rule   *ast.Rule
	seen   map[string]bool
}

// Failure is an expression of a rule's body that did not hold.
type Failure struct {
	Expr     string `json:"expr"`
	Location string `json:"location"`
}

// Explain evaluates query (DefaultQuery when empty) for input, recording
// the evaluation, so a security engineer can see why a decision came out
// as it did: the rules that held and those that did not. trace adds OPA's
// raw trace (TraceFails, TraceNotes or TraceFull; TraceOff or "" for
// none). It never uses the prepared hot-path query.
func (r *Revision) Explain(ctx context.Context, query string, input ast.Value, trace string) (*Explanation, error) {
	if query == "" {
		query = r.opts.Query
	}
	ref, err := ast.ParseRef(query)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", query, err)
	}
	var filter func([]*topdown.Event) []*topdown.Event
	switch trace {
	case TraceOff, "":
	case TraceNotes:
		filter = lineage.Notes
	case TraceFails:
		filter = lineage.Fails
	case TraceFull:
		filter = lineage.Full
	default:
		return nil, fmt.Errorf("trace mode %q: want off, notes, fails or full", trace)
	}
	pq, err := r.prepare(ctx, ref)
	if err != nil {
		return nil, err
	}
	buf := topdown.NewBufferTracer()
	ex := &Explanation{Query: query, Revision: r.ID}
	// Without rule indexing, every body of a rule is entered, so a rule
	// the index would have skipped shows where it fails too.
	ex.Value, ex.Err = r.eval(ctx, &pq, input, []rego.EvalOption{rego.EvalQueryTracer(buf), rego.EvalRuleIndexing(false)})
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
	ex.Rules = ruleTraces(events, r.dir)
	if filter != nil {
		var sb strings.Builder
		topdown.PrettyTraceWithLocation(&sb, filter(events))
		ex.Trace = sb.String()
	}
	return ex, nil
}

// ruleTraces turns OPA's trace events into the tree of rules evaluated.
// Each rule body OPA enters is a query of its own, entered from the query
// that referred to the rule; a negation or a comprehension is a query of
// its own too, but belongs to the rule around it.
func ruleTraces(events []*topdown.Event, dir string) []*RuleTrace {
	root := &RuleTrace{}
	owner := map[uint64]*RuleTrace{} // query → the rule whose body it is, or is within
	body := map[uint64]*RuleTrace{}  // query → the rule whose body it is
	for _, e := range events {
		switch e.Op {
		case topdown.EnterOp:
			parent := owner[e.ParentID]
			if parent == nil {
				parent = root
			}
			if rule, ok := e.Node.(*ast.Rule); ok && rule.Module != nil {
				n := parent.child(rule, dir)
				owner[e.QueryID], body[e.QueryID] = n, n
			} else if owner[e.QueryID] == nil {
				owner[e.QueryID] = parent
			}
		case topdown.ExitOp:
			if _, ok := e.Node.(*ast.Rule); ok && body[e.QueryID] != nil {
				body[e.QueryID].Held = true
			}
		case topdown.FailOp:
			if _, ok := e.Node.(*ast.Expr); ok && body[e.QueryID] != nil && e.Location != nil {
				body[e.QueryID].fail(e.Location, dir)
			}
		}
	}
	root.tidy()
	return root.Rules
}

// child returns the trace of rule under t, adding it the first time.
func (t *RuleTrace) child(rule *ast.Rule, dir string) *RuleTrace {
	for _, c := range t.Rules {
		if c.rule == rule {
			return c
		}
	}
	c := &RuleTrace{Rule: rule.Ref().GroundPrefix().String(), Location: relLocation(rule.Location, dir), rule: rule}
	t.Rules = append(t.Rules, c)
	return c
}

// fail records an expression of t's body that did not hold, once.
func (t *RuleTrace) fail(loc *ast.Location, dir string) {
	f := Failure{Expr: sourceText(loc.Text), Location: relLocation(loc, dir)}
	key := f.Location + "\x00" + f.Expr
	if t.seen == nil {
		t.seen = map[string]bool{}
	}
	if !t.seen[key] {
		t.seen[key] = true
		t.Failed = append(t.Failed, f)
	}
}

// tidy drops the failures of rules that held: what stopped one way
// through a body does not matter once another way held.
func (t *RuleTrace) tidy() {
	if t.Held {
		t.Failed = nil
	}
	for _, c := range t.Rules {
		c.tidy()
	}
}

// relLocation is file:line, the file relative to the policy directory.
func relLocation(loc *ast.Location, dir string) string {
	if loc == nil {
		return "?"
	}
	f := loc.File
	if rel, err := filepath.Rel(dir, f); err == nil && !strings.HasPrefix(rel, "..") {
		f = rel
	}
	return fmt.Sprintf("%s:%d", f, loc.Row)
}

// sourceText is an expression as the policy writes it, on one line and
// at most 80 characters.
func sourceText(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// writeRules writes the rule tree for people, indented by depth.
func writeRules(b *strings.Builder, rules []*RuleTrace, depth int) {
	for _, t := range rules {
		indent := strings.Repeat("  ", depth+1)
		if t.Held {
			fmt.Fprintf(b, "%s%s at %s: held\n", indent, t.Rule, t.Location)
		} else {
			var why []string
			for _, f := range t.Failed {
				why = append(why, fmt.Sprintf("%s (%s)", f.Expr, f.Location))
			}
			if len(why) == 0 {
				why = []string{"nothing matched"}
			}
			fmt.Fprintf(b, "%s%s at %s: did not hold: %s\n", indent, t.Rule, t.Location, strings.Join(why, "; "))
		}
		writeRules(b, t.Rules, depth+1)
	}
}
