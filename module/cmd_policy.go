package module

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/gatehouse-proxy/gatehouse/policies"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "gatehouse",
		Usage: "policy check|eval|test|diff | grants list|add|revoke | users deprovision|logout | requests list",
		Short: "Gatehouse tools: check and explain policies offline, manage grants and users",
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Long = fmt.Sprintf(commandHelp, binaryName())
			policy := &cobra.Command{Use: "policy", Short: "Check, evaluate, explain and test Rego policies offline"}
			policy.AddCommand(policyCheckCommand(), policyEvalCommand(), policyTestCommand(), policyDiffCommand())
			cmd.AddCommand(policy)
			cmd.AddCommand(grantsCommands()...)
		},
	})
}

// commandHelp is the gatehouse command's help; %[1]s is the binary's
// name.
const commandHelp = `
Tools for the people who write and review Gatehouse policies, and for
ops. The binary is Caddy with Gatehouse built in ('gatehouse' when built
from this repository, 'caddy' when built with xcaddy); 'gatehouse' after
it is the command Gatehouse adds to Caddy's, as plugins do.

  %[1]s gatehouse policy check DIR [--policy-query Q]
      Loads DIR exactly as the running Gatehouse does (compiler, type
      checker with the input schema, the decision's shape): prints OK with
      the revision, or each error with its file and line.

  %[1]s gatehouse policy eval --policy DIR --input FILE [--partial] [--query Q] [--trace fails|notes|full] [--format text|json]
      Evaluates the decision (or another query) for an input, prints it and
      the rules that decided it, with their files and lines. FILE is an
      input document, or an audit line written with decision_log full: its
      "input" is replayed. The input is checked against the input schema;
      --partial accepts one that leaves fields out. --trace adds OPA's raw
      trace.

  %[1]s gatehouse policy test DIR
      Runs the *_test.rego tests under DIR, as 'opa test DIR' does.

  %[1]s gatehouse policy diff --candidate DIR --log FILE [--policy CURRENT] [--summary] [--examples N] [--format text|json]
      Replays a decision log (audit lines written with decision_log full)
      against the candidate policy in DIR and reports which decisions it
      changes (allow to deny, deny to allow, step-up added or removed, …),
      grouped by the candidate's rule that decided and by app, with
      example requests. Without --policy, each line's logged result is
      what was served; with it, CURRENT decides each input again (and
      step-up and header changes show too). Lines without an input are
      counted and skipped. --summary prints only the counts.

  %[1]s gatehouse grants list|add|revoke --store URL …
  %[1]s gatehouse users deprovision|logout --store URL (--user EMAIL | --iss ISS --sub SUB)
  %[1]s gatehouse requests list --store URL [--status pending]
      Manage just-in-time grants. URL is the grants directive's (default
      $GATEHOUSE_GRANTS). Redis is used directly. An embedded file:// store
      that a running Gatehouse holds is reached through its admin API,
      found as '%[1]s stop' finds it: --admin ADDR (unix//path for a
      socket), else the admin address in --config FILE [--adapter NAME],
      else localhost:2019. 'grants add --policy DIR' refuses a resource the
      policy does not name. --json prints JSON; 'grants list --all' is an
      access review.
`

// binaryName is the name the binary was run by, for help texts: gatehouse
// or caddy.
func binaryName() string {
	if len(os.Args) > 0 {
		if name := filepath.Base(os.Args[0]); name != "." && name != string(filepath.Separator) {
			return name
		}
	}
	return "caddy"
}

func policyEvalCommand() *cobra.Command {
	var f policyEvalFlags
	c := &cobra.Command{
		Use:   "eval --policy DIR --input FILE",
		Short: "Evaluate a decision offline and explain it",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if f.dir == "" || f.input == "" {
				return errors.New("--policy and --input are required")
			}
			return policyEval(c.OutOrStdout(), f)
		},
	}
	c.Flags().StringVar(&f.dir, "policy", "", "policy directory (as the policy directive)")
	c.Flags().StringVar(&f.input, "input", "", "input JSON, or an audit line written with decision_log full; - for stdin")
	c.Flags().StringVar(&f.query, "query", "", "query to evaluate, such as data.gatehouse.approval (default the decision query)")
	c.Flags().StringVar(&f.policyQuery, "policy-query", "", "the decision query, as the policy_query directive (default data.gatehouse.decision)")
	c.Flags().BoolVar(&f.partial, "partial", false, "accept an input that lacks fields (rules that read them see undefined)")
	c.Flags().StringVar(&f.trace, "trace", policies.TraceOff, "also print OPA's raw trace: fails, notes, full or off")
	c.Flags().StringVar(&f.format, "format", "text", "text or json")
	return c
}

type policyEvalFlags struct {
	dir, input, query, policyQuery, trace, format string
	partial                                       bool
}

func policyCheckCommand() *cobra.Command {
	var query string
	c := &cobra.Command{
		Use:   "check DIR",
		Short: "Check a policy directory as the running Gatehouse loads it",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return policies.Check(context.Background(), c.OutOrStdout(), args[0], policies.Options{Query: query})
		},
	}
	c.Flags().StringVar(&query, "policy-query", "", "the decision query, as the policy_query directive (default data.gatehouse.decision)")
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

// policyEval evaluates a query for the input in f.input (an input
// document or an audit line; - is stdin) against the policy in f.dir, and
// reports why.
func policyEval(w io.Writer, f policyEvalFlags) error {
	ctx := context.Background()
	// Offline, an evaluation has time: the trace makes it slower.
	rev, err := policies.Load(ctx, f.dir, policies.Options{Query: f.policyQuery, Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	var r io.Reader = os.Stdin
	if f.input != "-" {
		file, err := os.Open(f.input)
		if err != nil {
			return err
		}
		defer file.Close()
		r = file
	}
	rp, err := policies.ReadInput(r, f.partial)
	if errors.Is(err, policies.ErrIncomplete) {
		return fmt.Errorf("%s: %w\ngive --partial to evaluate it anyway: rules that read a missing field see undefined", f.input, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", f.input, err)
	}
	ex, err := rev.Explain(ctx, f.query, rp.Input, f.trace)
	if err != nil {
		return err
	}
	return rev.Report(w, rp, ex, f.format)
}

func policyDiffCommand() *cobra.Command {
	var f policyDiffFlags
	c := &cobra.Command{
		Use:   "diff --candidate DIR --log FILE",
		Short: "Replay a decision log against a candidate policy and report the decisions it changes",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if f.candidate == "" || f.log == "" {
				return errors.New("--candidate and --log are required")
			}
			if f.format != "text" && f.format != "json" {
				return fmt.Errorf("--format %q: want text or json", f.format)
			}
			return policyDiff(c.Context(), c.OutOrStdout(), f)
		},
	}
	c.Flags().StringVar(&f.candidate, "candidate", "", "the candidate policy directory")
	c.Flags().StringVar(&f.log, "log", "", "the audit log (JSON lines, decision_log full); - for stdin")
	c.Flags().StringVar(&f.current, "policy", "", "the current policy directory: decide each input again with it, rather than read what the log says was served")
	c.Flags().StringVar(&f.policyQuery, "policy-query", "", "the decision query, as the policy_query directive (default data.gatehouse.decision)")
	c.Flags().BoolVar(&f.summary, "summary", false, "print only the counts")
	c.Flags().IntVar(&f.examples, "examples", 3, "example requests shown per group")
	c.Flags().StringVar(&f.format, "format", "text", "text or json")
	return c
}

type policyDiffFlags struct {
	candidate, log, current, policyQuery, format string
	summary                                      bool
	examples                                     int
}

// policyDiff replays f.log against f.candidate (and f.current) and
// writes the report.
func policyDiff(ctx context.Context, w io.Writer, f policyDiffFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	// Offline, an evaluation has time.
	opts := policies.Options{Query: f.policyQuery, Timeout: 10 * time.Second}
	var err error
	var d policies.DiffOptions
	if d.Candidate, err = policies.Load(ctx, f.candidate, opts); err != nil {
		return fmt.Errorf("--candidate: %w", err)
	}
	if f.current != "" {
		if d.Current, err = policies.Load(ctx, f.current, opts); err != nil {
			return fmt.Errorf("--policy: %w", err)
		}
	}
	d.Examples, d.CountsOnly = f.examples, f.summary
	var r io.Reader = os.Stdin
	if f.log != "-" {
		file, err := os.Open(f.log)
		if err != nil {
			return err
		}
		defer file.Close()
		r = file
	}
	rep, err := policies.Diff(ctx, r, d)
	if err != nil {
		return fmt.Errorf("%s: %w", f.log, err)
	}
	return policies.WriteDiff(w, rep, f.candidate, f.current, f.format, f.summary)
}
