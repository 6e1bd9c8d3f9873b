package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
)

// The offline tools for people who write and review policies: replay a
// logged decision and see why it came out as it did, and run a policy
// directory's tests (`caddy gatehouse policy eval|test`).

// ReadInput reads an input document, or the input of an audit line
// written with decision_log full (a JSON object with decision_id and
// input).
func ReadInput(r io.Reader) (ast.Value, error) {
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
	if in, ok := doc["input"].(map[string]any); ok && doc["decision_id"] != nil {
		doc = in
	}
	return ast.InterfaceToValue(doc)
}

// Report writes an explanation: for people (format "text": the revision,
// its warnings, the value, the result and the trace) or as JSON.
func (r *Revision) Report(w io.Writer, dir string, ex *Explanation, mode, format string) error {
	if format == "json" {
		out := map[string]any{"query": ex.Query, "revision": ex.Revision, "value": ex.Value, "trace": ex.Trace}
		if ex.Err != nil {
			out["error"] = ex.Err.Error()
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "policy   %s (revision %s, %d files)\nquery    %s\n", dir, r.ID, len(r.Files), ex.Query)
	for _, warning := range r.Warnings {
		fmt.Fprintf(&b, "warning  %s\n", warning)
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
	if ex.Trace != "" {
		fmt.Fprintf(&b, "\ntrace (%s):\n%s", mode, ex.Trace)
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
