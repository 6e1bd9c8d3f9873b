package module

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/gatehouse-proxy/gatehouse/policies"
)

// runCommand runs a CLI command with args and returns what it printed
// and its error.
func runCommand(c *cobra.Command, args ...string) (string, error) {
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args)
	c.SilenceUsage = true
	err := c.Execute()
	return out.String(), err
}

// wholeInput is an input as the decision log writes it.
func wholeInput(groups []string, path string) policies.Input {
	in := policies.Input{Version: policies.InputVersion, App: "x", Now: 1795597230, NowMinute: 1795597200,
		User: policies.User{Sub: "a", Iss: "https://idp", Groups: groups, AMR: []string{}, Verifications: map[string]map[string]any{}},
		Request: policies.Request{Method: "GET", Host: "x", Path: path, PathLower: path, RawPath: path,
			Query: map[string][]string{}, Headers: map[string]string{}}}
	in.SetGrants(nil)
	return in
}

func TestPolicyEvalCommand(t *testing.T) {
	dir, inputs := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(testPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name string, v any) string {
		t.Helper()
		b, ok := v.([]byte)
		if !ok {
			b, _ = json.Marshal(v)
		}
		p := filepath.Join(inputs, name) // not in dir: JSON there is data
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	line := write("line.json", map[string]any{"level": "info", "logger": "http.handlers.gatehouse.audit", "msg": "decision",
		"decision_id": "abc", "result": "allow", "input": wholeInput([]string{"admins"}, "/")})
	out, err := runCommand(policyEvalCommand(), "--policy", dir, "--input", line)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"input    of decision abc (audit line)", "result   ALLOW; sets X-Role=admin",
		"decided  by data.gatehouse.decision at p.rego:5", "data.gatehouse.decision at p.rego:10: did not hold: input.request.path_lower == \"/undeclared\" (p.rego:10)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "__local") || strings.Contains(out, "internal.") || strings.Contains(out, "OPA trace") {
		t.Errorf("compiler internals or the raw trace without --trace:\n%s", out)
	}
	if out, err := runCommand(policyEvalCommand(), "--policy", dir, "--input", line, "--trace", "full"); err != nil || !strings.Contains(out, "OPA trace:\n") {
		t.Errorf("--trace full: %v\n%s", err, out)
	}
	if out, err := runCommand(policyEvalCommand(), "--policy", dir, "--input", line, "--format", "json"); err != nil ||
		!strings.Contains(out, `"rule": "data.gatehouse.decision"`) || !strings.Contains(out, `"decision_id": "abc"`) {
		t.Errorf("--format json: %v\n%s", err, out)
	}

	// A minimal audit line has no input: refused, saying what to do.
	minimal := write("minimal.json", []byte(`{"level":"info","logger":"http.handlers.gatehouse.audit","msg":"decision","decision_id":"abd","result":"deny","path":"/"}`))
	if _, err := runCommand(policyEvalCommand(), "--policy", dir, "--input", minimal); err == nil || !strings.Contains(err.Error(), "set decision_log full") {
		t.Errorf("a minimal audit line: %v", err)
	}
	// A partial input is refused unless --partial, and then said.
	partial := write("partial.json", []byte(`{"app":"x","user":{"groups":[]},"request":{"path_lower":"/undeclared-x"}}`))
	if _, err := runCommand(policyEvalCommand(), "--policy", dir, "--input", partial); err == nil ||
		!strings.Contains(err.Error(), "input.user.iss") || !strings.Contains(err.Error(), "give --partial") {
		t.Errorf("a partial input without --partial: %v", err)
	}
	out, err = runCommand(policyEvalCommand(), "--policy", dir, "--input", partial, "--partial")
	if err != nil || !strings.Contains(out, `result   DENY; reason "nobody else"`) || !strings.Contains(out, "warning  partial input: rules that read input.grant_resources") {
		t.Errorf("--partial: %v\n%s", err, out)
	}
	unknown := write("unknown.json", []byte(`{"app":"x","usr":{"groups":["admins"]}}`))
	if _, err := runCommand(policyEvalCommand(), "--policy", dir, "--input", unknown, "--partial"); err == nil || !strings.Contains(err.Error(), "input.usr: unknown field") {
		t.Errorf("an unknown field: %v", err)
	}
	if _, err := runCommand(policyEvalCommand(), "--policy", dir, "--input", filepath.Join(inputs, "missing.json")); err == nil {
		t.Error("a missing input file was accepted")
	}
	if _, err := runCommand(policyEvalCommand(), "--policy", dir, "--input", line, "--explain", "full"); err == nil {
		t.Error("--explain is gone (the raw trace is --trace), yet accepted")
	}
}

func TestPolicyCheckCommand(t *testing.T) {
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "p.rego"), []byte(testPolicy), 0o644)
	if out, err := runCommand(policyCheckCommand(), dir); err != nil || !strings.HasPrefix(out, "OK "+dir+": revision ") {
		t.Errorf("a good policy: %v\n%s", err, out)
	}
	if out, err := runCommand(policyCheckCommand(), dir, "--policy-query", "data.other.decision"); err == nil || !strings.Contains(err.Error(), "no rule defines data.other.decision") {
		t.Errorf("policy_query that nothing defines: %v\n%s", err, out)
	}
	_ = os.WriteFile(filepath.Join(dir, "q.rego"), []byte("package gatehouse\n\nx := input.usr.groups\n"), 0o644)
	if out, err := runCommand(policyCheckCommand(), dir); err == nil || !strings.HasPrefix(out, "q.rego:3: rego_type_error: undefined ref: input.usr.groups") {
		t.Errorf("a bad policy: %v\n%s", err, out)
	}
}
