package module

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
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
			return policies.RunTests(context.Background(), c.OutOrStdout(), args[0])
		},
	}
}

// policyEval evaluates query for the input in inputPath (an input
// document or an audit line; - is stdin) against the policy in dir, and
// reports why.
func policyEval(w io.Writer, dir, inputPath, query, explain, format string) error {
	ctx := context.Background()
	rev, err := policies.Load(ctx, dir, policies.Options{})
	if err != nil {
		return err
	}
	var r io.Reader = os.Stdin
	if inputPath != "-" {
		f, err := os.Open(inputPath)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	input, err := policies.ReadInput(r)
	if err != nil {
		return fmt.Errorf("%s: %w", inputPath, err)
	}
	ex, err := rev.Explain(ctx, query, input, explain)
	if err != nil {
		return err
	}
	return rev.Report(w, dir, ex, explain, format)
}
