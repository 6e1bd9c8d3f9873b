package module

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/spf13/cobra"

	"github.com/gatehouse-proxy/gatehouse/policies"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "gatehouse",
		Usage: "policy eval|test | grants list|add|revoke | users deprovision|logout | requests list",
		Short: "Gatehouse tools: explain policy decisions offline, run policy tests, manage grants",
		Long: `
Tools for the people who write and review Gatehouse policies.

  gatehouse policy eval --policy DIR --input FILE [--query Q] [--explain fails|notes|full|off] [--format text|json]
      Evaluates the decision (or another query) for an input, prints it and
      the rules that produced it. FILE is an input document, or an audit
      line written with decision_log full: its "input" is replayed.

  gatehouse policy test DIR
      Runs the *_test.rego tests under DIR, as 'opa test DIR' does.

  gatehouse grants list|add|revoke --store URL …
  gatehouse users deprovision|logout --store URL --user EMAIL
  gatehouse requests list --store URL [--status pending]
      Manage just-in-time grants. URL is the grants directive's: Redis is
      used directly; an embedded file:// store held by a running Caddy is
      reached through its admin API (--admin, default localhost:2019).
      --json prints JSON; 'grants list --all' is an access review.
`,
		CobraFunc: func(cmd *cobra.Command) {
			policy := &cobra.Command{Use: "policy", Short: "Evaluate, explain and test Rego policies offline"}
			policy.AddCommand(policyEvalCommand(), policyTestCommand())
			cmd.AddCommand(policy)
			cmd.AddCommand(grantsCommands()...)
		},
	})
}

func policyEvalCommand() *cobra.Command {
	var dir, inputPath, query, explain, format string
	c := &cobra.Command{
		Use:   "eval --policy DIR --input FILE",
		Short: "Evaluate a decision offline and explain it",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if dir == "" || inputPath == "" {
				return errors.New("--policy and --input are required")
			}
			return policyEval(c.OutOrStdout(), dir, inputPath, query, explain, format)
		},
	}
	c.Flags().StringVar(&dir, "policy", "", "policy directory (as the policy directive)")
	c.Flags().StringVar(&inputPath, "input", "", "input JSON, or an audit line with an input; - for stdin")
	c.Flags().StringVar(&query, "query", policies.DefaultQuery, "query to evaluate, such as data.gatehouse.approval")
	c.Flags().StringVar(&explain, "explain", policies.ExplainFails, "trace to print: fails, notes, full or off")
	c.Flags().StringVar(&format, "format", "text", "text or json")
	return c
}

func policyTestCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "test DIR",
		Short: "Run the *_test.rego tests of a policy directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return policyTest(c.OutOrStdout(), args[0])
		},
	}
}

// readPolicyInput reads an input document, or the input of an audit line.
func readPolicyInput(path string) (ast.Value, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object: %v", path, err)
	}
	if in, ok := doc["input"].(map[string]any); ok && doc["decision_id"] != nil {
		doc = in
	}
	return ast.InterfaceToValue(doc)
}

func policyEval(w io.Writer, dir, inputPath, query, explain, format string) error {
	ctx := context.Background()
	rev, err := policies.Load(ctx, dir, policies.Options{})
	if err != nil {
		return err
	}
	input, err := readPolicyInput(inputPath)
	if err != nil {
		return err
	}
	ex, err := rev.Explain(ctx, query, input, explain)
	if err != nil {
		return err
	}
	if format == "json" {
		out := map[string]any{"query": ex.Query, "revision": ex.Revision, "value": ex.Value, "trace": ex.Trace}
		if ex.Err != nil {
			out["error"] = ex.Err.Error()
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(w, "policy   %s (revision %s, %d files)\nquery    %s\n", dir, rev.ID, len(rev.Files), ex.Query)
	for _, warning := range rev.Warnings {
		fmt.Fprintf(w, "warning  %s\n", warning)
	}
	if ex.Value != nil {
		v, _ := json.Marshal(ex.Value)
		fmt.Fprintf(w, "value    %s\n", v)
	}
	switch {
	case ex.Err != nil:
		fmt.Fprintf(w, "result   DENY (policy_error): %v\n", ex.Err)
	case ex.Decision != nil:
		fmt.Fprintf(w, "result   %s\n", describeDecision(*ex.Decision))
	case ex.Approval != nil:
		fmt.Fprintf(w, "result   may_approve=%v auto_approve=%v max_duration=%s\n", ex.Approval.MayApprove, ex.Approval.AutoApprove, ex.Approval.MaxDuration)
	}
	if ex.Trace != "" {
		fmt.Fprintf(w, "\ntrace (%s):\n%s", explain, ex.Trace)
	}
	return nil
}

func describeDecision(d policies.Decision) string {
	var parts []string
	if d.Allow {
		parts = append(parts, "ALLOW")
	} else {
		parts = append(parts, "DENY")
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

func policyTest(w io.Writer, dir string) error {
	results, err := tester.Run(context.Background(), dir)
	if err != nil {
		return err
	}
	var pass, fail int
	for _, r := range results {
		switch {
		case r.Error != nil:
			fail++
			fmt.Fprintf(w, "ERROR %s.%s (%s): %v\n", r.Package, r.Name, r.Location, r.Error)
		case r.Fail:
			fail++
			fmt.Fprintf(w, "FAIL  %s.%s (%s)\n", r.Package, r.Name, r.Location)
			for name, sr := range r.SubResults.Iter {
				if sr.Fail {
					fmt.Fprintf(w, "      %s: FAIL\n", strings.Join(name, " / "))
				}
			}
		case r.Skip:
		default:
			pass++
		}
	}
	fmt.Fprintf(w, "PASS: %d/%d\n", pass, pass+fail)
	if len(results) == 0 {
		return errors.New("no tests found")
	}
	if fail > 0 {
		return fmt.Errorf("%d of %d tests failed", fail, pass+fail)
	}
	return nil
}
