package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
)

// The offline tools for people who write and review policies: check a
// policy directory as the running engine would load it, replay a logged
// decision and see why it came out as it did, and run a policy
// directory's tests (`gatehouse policy check|eval|test`).

// ErrNoInput marks an audit line that holds no input to replay: it was
// written with decision_log minimal.
var ErrNoInput = errors.New("policies: no input to replay")

// ErrIncomplete marks an input that lacks fields the input always has,
// read without partial.
var ErrIncomplete = errors.New("policies: incomplete input")

// Replay is an input document read for offline evaluation.
type Replay struct {
	Input ast.Value
	// DecisionID is the decision's id when the input came from an audit
	// line.
	DecisionID string
	// Missing lists the fields a partial input lacks (see ValidateInput).
	Missing []string
}

// ReadInput reads an input document, or the input of an audit line
// written with decision_log full, and checks it against the input schema:
// an unknown field or a value of the wrong type is refused, and so is a
// missing field unless partial is set (then Missing lists them). An audit
// line without an input (decision_log minimal) is refused with
// ErrNoInput: evaluating the line itself would explain nothing.
func ReadInput(r io.Reader, partial bool) (*Replay, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	return replayDoc(doc, partial)
}

// replayDoc is ReadInput for a document already decoded (with numbers
// as json.Number).
func replayDoc(doc map[string]any, partial bool) (*Replay, error) {
	var err error
	rp := &Replay{}
	if isAuditLine(doc) {
		rp.DecisionID, _ = doc["decision_id"].(string)
		in, ok := doc["input"].(map[string]any)
		if !ok {
			what := "this audit line"
			if rp.DecisionID != "" {
				what = "the audit line of decision " + rp.DecisionID
			}
			return nil, fmt.Errorf("%w: %s was written with decision_log minimal, which logs no input; set decision_log full in the gatehouse block to log the whole input and replay the decisions written after that", ErrNoInput, what)
		}
		// Lines written before grants were always logged as a list
		// show a user without grants as null; the policy saw [].
		if g, present := in["grants"]; present && g == nil {
			in["grants"] = []any{}
		}
		doc = in
	}
	if v, ok := doc["version"].(json.Number); ok && v.String() == "1" {
		// Version 1 knew sessions only: a person, signed in by a browser,
		doc["version"] = json.Number(strconv.Itoa(InputVersion))
		if _, ok := doc["principal"]; !ok {
			doc["principal"] = map[string]any{"kind": "user", "via": "session"}
		}
		if _, ok := doc["token"]; !ok {
			doc["token"] = map[string]any{"client_id": "", "scopes": []any{}}
		}
		// ... and one IdP, which is named primary now.
		if u, ok := doc["user"].(map[string]any); ok {
			if _, ok := u["idp"]; !ok {
				u["idp"] = "primary"
			}
		}
	}
	// Inputs written before access reviews had no revoked_resources
	// (none was revoked then); an empty list may show as null.
	if v := doc["revoked_resources"]; v == nil && doc["version"] != nil {
		doc["revoked_resources"] = []any{}
	}
	if v, ok := doc["version"].(json.Number); ok && v.String() != strconv.Itoa(InputVersion) {
		return nil, fmt.Errorf("%w: input version %s; this Gatehouse reads version %d", ErrInput, v, InputVersion)
	}
	if rp.Missing, err = ValidateInput(doc); err != nil {
		return nil, err
	}
	if len(rp.Missing) > 0 && !partial {
		return nil, fmt.Errorf("%w: it lacks fields every input has: %s", ErrIncomplete, strings.Join(rp.Missing, ", "))
	}
	rp.Input, err = ast.InterfaceToValue(doc)
	return rp, err
}

// isAuditLine tells an audit line from an input document: inputs have
// none of the log's own fields.
func isAuditLine(doc map[string]any) bool {
	for _, k := range []string{"decision_id", "logger", "msg", "ts", "level"} {
		if _, ok := doc[k]; ok {
			return true
		}
	}
	return false
}

// Check loads dir exactly as the running engine does (the compiler, the
// type checker with the input schema, the decision's shape) and writes OK
// with the revision, its files and warnings, or every error with its file
// and line.
func Check(ctx context.Context, w io.Writer, dir string, opts Options) error {
	rev, err := Load(ctx, dir, opts)
	if err != nil {
		var errs LoadErrors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintln(w, e)
			}
			return fmt.Errorf("%s: %d errors", dir, len(errs))
		}
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "OK %s: revision %s, %d files, query %s\n", dir, rev.ID, len(rev.Files), rev.opts.Query)
	for _, warning := range rev.Warnings {
		fmt.Fprintf(&b, "warning %s\n", warning)
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// GrantableQuery names the resources that can be granted just in time
// (a set or an array of strings, reading no input). It is optional: the
// ops CLI checks the resource of a grant it adds against it.
const GrantableQuery = "data.gatehouse.grantable"

// ErrNoGrantable: the policy does not say which resources can be
// granted.
var ErrNoGrantable = errors.New("policies: the policy names no grantable resources")

// Grantable returns the resources the policy says can be granted just in
// time (GrantableQuery), sorted.
func (r *Revision) Grantable(ctx context.Context) ([]string, error) {
	ref := ast.MustParseRef(GrantableQuery)
	if len(r.compiler.GetRules(ref)) == 0 {
		return nil, fmt.Errorf("%w: no rule defines %s", ErrNoGrantable, GrantableQuery)
	}
	pq, err := r.prepare(ctx, ref)
	if err != nil {
		return nil, err
	}
	v, err := r.eval(ctx, &pq, ast.NewObject(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", GrantableQuery, err)
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s is %T, want a set of strings", GrantableQuery, v)
	}
	names := make([]string, 0, len(list))
	for _, x := range list {
		s, ok := x.(string)
		if !ok {
			return nil, fmt.Errorf("%s holds %v, want strings", GrantableQuery, x)
		}
		names = append(names, s)
	}
	sort.Strings(names)
	return names, nil
}

// Report writes an explanation: for people (format "text": the revision,
// its warnings, the value, the result, the rules that decided and the
// raw trace if asked for) or as JSON.
func (r *Revision) Report(w io.Writer, rp *Replay, ex *Explanation, format string) error {
	if format == "json" {
		out := map[string]any{"query": ex.Query, "revision": ex.Revision, "value": ex.Value, "rules": ex.Rules}
		if ex.Trace != "" {
			out["trace"] = ex.Trace
		}
		if rp.DecisionID != "" {
			out["decision_id"] = rp.DecisionID
		}
		if len(rp.Missing) > 0 {
			out["missing"] = rp.Missing
		}
		if ex.Err != nil {
			out["error"] = ex.Err.Error()
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "policy   %s (revision %s, %d files)\nquery    %s\n", r.dir, r.ID, len(r.Files), ex.Query)
	if rp.DecisionID != "" {
		fmt.Fprintf(&b, "input    of decision %s (audit line)\n", rp.DecisionID)
	}
	for _, warning := range r.Warnings {
		fmt.Fprintf(&b, "warning  %s\n", warning)
	}
	if len(rp.Missing) > 0 {
		fmt.Fprintf(&b, "warning  partial input: rules that read %s see undefined\n", strings.Join(rp.Missing, ", "))
	}
	if ex.Value != nil {
		v, err := json.Marshal(ex.Value)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "value    %s\n", v)
	}
	switch {
	case ex.Err != nil:
		fmt.Fprintf(&b, "result   DENY (policy_error): %v\n", ex.Err)
	case ex.Decision != nil:
		fmt.Fprintf(&b, "result   %s\n", ex.Decision)
	case ex.Approval != nil:
		fmt.Fprintf(&b, "result   may_approve=%v auto_approve=%v max_duration=%s\n", ex.Approval.MayApprove, ex.Approval.AutoApprove, ex.Approval.MaxDuration)
	}
	for _, t := range ex.Rules {
		if t.Held {
			fmt.Fprintf(&b, "decided  by %s at %s\n", t.Rule, t.Location)
		}
	}
	if len(ex.Rules) > 0 {
		b.WriteString("\nwhy (each rule the query consulted, with the rules it consulted):\n")
		writeRules(&b, ex.Rules, 0)
	}
	if ex.Trace != "" {
		fmt.Fprintf(&b, "\nOPA trace:\n%s", ex.Trace)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// String describes a decision for people: ALLOW or DENY, and what else
// it says.
func (d Decision) String() string {
	parts := []string{"DENY"}
	if d.Allow {
		parts[0] = "ALLOW"
	}
	if d.Reason != "" {
		parts = append(parts, fmt.Sprintf("reason %q", d.Reason))
	}
	if g := d.RequestGrant; g != nil {
		parts = append(parts, fmt.Sprintf("offers a grant of %s for up to %s", g.Resource, g.MaxDuration))
	}
	if s := d.StepUp; s != nil {
		parts = append(parts, fmt.Sprintf("needs step-up acr=%v amr=%v max_age=%s", s.ACR, s.AMR, s.MaxAge))
	}
	if len(d.Headers) > 0 {
		names := make([]string, 0, len(d.Headers))
		for k, v := range d.Headers {
			names = append(names, k+"="+v)
		}
		sort.Strings(names)
		parts = append(parts, "sets "+strings.Join(names, ", "))
	}
	return strings.Join(parts, "; ")
}

// RunTests runs the *_test.rego tests under dir, as `opa test` does, and
// writes each failure and the count of passes. It fails when a test
// fails, or when there is none.
func RunTests(ctx context.Context, w io.Writer, dir string) error {
	results, err := tester.Run(ctx, dir)
	if err != nil {
		return err
	}
	var pass, fail int
	var b strings.Builder
	for _, r := range results {
		switch {
		case r.Error != nil:
			fail++
			fmt.Fprintf(&b, "ERROR %s.%s (%s): %v\n", r.Package, r.Name, r.Location, r.Error)
		case r.Fail:
			fail++
			fmt.Fprintf(&b, "FAIL  %s.%s (%s)\n", r.Package, r.Name, r.Location)
			for name, sr := range r.SubResults.Iter {
				if sr.Fail {
					fmt.Fprintf(&b, "      %s: FAIL\n", strings.Join(name, " / "))
				}
			}
		case r.Skip:
		default:
			pass++
		}
	}
	fmt.Fprintf(&b, "PASS: %d/%d\n", pass, pass+fail)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if len(results) == 0 {
		return errors.New("no tests found")
	}
	if fail > 0 {
		return fmt.Errorf("%d of %d tests failed", fail, pass+fail)
	}
	return nil
}
