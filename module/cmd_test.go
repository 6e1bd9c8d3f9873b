package module

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"

	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
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
			Query: map[string][]string{}, Headers: map[string]string{}},
		Principal: policies.Principal{Kind: "user", Via: "session"}, Token: policies.Token{Scopes: []string{}}}
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

// TestAdminAddress: the CLI finds the admin API as `caddy stop` does:
// --admin, else the config's admin address (a Unix socket too), else the
// default; a config with `admin off` says so.
func TestAdminAddress(t *testing.T) {
	dir := t.TempDir()
	n := 0
	caddyfile := func(global string) string {
		n++
		p := filepath.Join(dir, fmt.Sprintf("Caddyfile.%d", n))
		if err := os.WriteFile(p, []byte("{\n\t"+global+"\n}\n\nexample.com {\n\trespond ok\n}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sock := "unix/" + filepath.Join(dir, "admin.sock")
	for _, c := range []struct {
		name string
		f    storeFlags
		want string
		err  error
	}{
		{"--admin", storeFlags{admin: sock, config: caddyfile("admin off")}, sock, nil},
		{"default", storeFlags{}, caddy.DefaultAdminListen, nil},
		{"config, socket", storeFlags{config: caddyfile("admin " + sock), adapter: "caddyfile"}, sock, nil},
		{"config, admin off", storeFlags{config: caddyfile("admin off"), adapter: "caddyfile"}, "", errAdminOff},
		{"config, JSON admin disabled", storeFlags{config: filepath.Join(dir, "c.json")}, "", errAdminOff},
	} {
		if c.name == "config, JSON admin disabled" {
			_ = os.WriteFile(c.f.config, []byte(`{"admin":{"disabled":true}}`), 0o600)
		}
		got, err := c.f.adminAddress()
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("%s: %q, %v; want %q, %v", c.name, got, err, c.want, c.err)
		}
	}
	if _, err := (&storeFlags{config: filepath.Join(dir, "missing")}).adminAddress(); err == nil || !strings.Contains(err.Error(), "reading --config") {
		t.Errorf("a missing config: %v", err)
	}
}

// TestEmbeddedStoreThroughAdmin: an operation on an embedded store goes
// to the admin API when the process there holds the store (however its
// URL spells the path), and is done on the file directly when no process
// does; a file another process holds, with no admin API to reach, is
// refused naming the address tried, the error, and `admin off`.
func TestEmbeddedStoreThroughAdmin(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "grants.db")
	store := "file://" + path

	// An admin API on a Unix socket, as Caddy serves it.
	sockPath := filepath.Join(dir, "admin.sock")
	ln, err := net.Listen("unix", sockPath)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != storeOpPath {
			http.NotFound(w, r)
			return
		}
		if err := serveStoreOp(w, r); err != nil {
			var ae caddy.APIError
			errors.As(err, &ae)
			http.Error(w, err.Error(), ae.HTTPStatus)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	admin := "unix/" + sockPath

	op := func(f storeFlags) (*gate.StoreOpResult, error) {
		f.op.Store, f.op.Op, f.op.By = store, "list-grants", "test"
		return f.run()
	}
	// Nobody holds it, nobody made it: say so, and make nothing.
	if _, err := op(storeFlags{admin: admin}); err == nil || !strings.Contains(err.Error(), "no grant store at "+path) {
		t.Errorf("a store that does not exist: %v", err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("the CLI created a store file")
	}

	// This process holds it, as a running Gatehouse does.
	held, err := grants.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	u := grants.User{Iss: "https://idp", Sub: "bob"}
	if _, err := held.AddGrant(context.Background(), grants.Grant{User: u, Resource: "db", CreatedAt: 1, ExpiresAt: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	// The admin API does not hold it (yet): the file is locked.
	_, err = op(storeFlags{admin: admin})
	if !errors.Is(err, grants.ErrStoreLocked) || !strings.Contains(err.Error(), "does not hold this store") {
		t.Errorf("held elsewhere: %v", err)
	}
	cache := grants.NewCache(held, time.Second)
	key := "file://" + filepath.Join(dir, ".", "grants.db") + "\x00test" // another spelling of the path
	if _, _, err := grantStores.LoadOrNew(key, func() (caddy.Destructor, error) { return cache, nil }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = grantStores.Delete(key) })
	res, err := op(storeFlags{admin: admin})
	if err != nil || len(res.Grants) != 1 || res.Grants[0].User != u {
		t.Fatalf("through the admin API: %+v %v", res, err)
	}
	// An operation the running process refuses is an error, not a reason
	// to try the file.
	f := storeFlags{admin: admin}
	f.op = gate.StoreOp{Store: store, Op: "logout-user", Email: "nobody@example.com"}
	if _, err := f.run(); err == nil || !strings.Contains(err.Error(), "no user with the email nobody@example.com") {
		t.Errorf("a refused operation: %v", err)
	}

	// No admin API there: the address tried and the error.
	gone := "unix/" + filepath.Join(dir, "gone.sock")
	_, err = op(storeFlags{admin: gone})
	if !errors.Is(err, grants.ErrStoreLocked) || !strings.Contains(err.Error(), "tried "+gone) || !strings.Contains(err.Error(), "connect") {
		t.Errorf("an unreachable admin API: %v", err)
	}
	// admin off in the config: said.
	cf := filepath.Join(dir, "Caddyfile")
	_ = os.WriteFile(cf, []byte("{\n\tadmin off\n}\n\nexample.com {\n\trespond ok\n}\n"), 0o600)
	_, err = op(storeFlags{config: cf, adapter: "caddyfile"})
	if !errors.Is(err, grants.ErrStoreLocked) || !strings.Contains(err.Error(), "admin off") || !strings.Contains(err.Error(), cf) {
		t.Errorf("admin off: %v", err)
	}

	// Nobody holds it: the CLI opens the file itself.
	_, _ = grantStores.Delete(key)
	if err := cache.Close(); err != nil {
		t.Fatal(err)
	}
	res, err = op(storeFlags{admin: gone})
	if err != nil || len(res.Grants) != 1 {
		t.Errorf("on the file directly: %+v %v", res, err)
	}
}

// TestGrantsAddChecksTheResource: with a policy, `grants add` refuses a
// resource the policy cannot grant, listing those it can.
func TestGrantsAddChecksTheResource(t *testing.T) {
	lib, _ := filepath.Abs("../policies")
	if err := checkResource(lib, "projects-app"); err != nil {
		t.Errorf("a resource of the library: %v", err)
	}
	err := checkResource(lib, "nonexistent")
	if err == nil || !strings.Contains(err.Error(), `--resource "nonexistent"`) || !strings.Contains(err.Error(), "legacy-app, payroll-admin, payroll-reports, projects-admin, projects-app") {
		t.Errorf("an unknown resource: %v", err)
	}
	if err := checkResource("", "nonexistent"); err != nil {
		t.Errorf("no policy, no check: %v", err)
	}
	bare := t.TempDir()
	_ = os.WriteFile(filepath.Join(bare, "p.rego"), []byte(testPolicy), 0o644)
	if err := checkResource(bare, "db"); !errors.Is(err, policies.ErrNoGrantable) {
		t.Errorf("a policy without grantable: %v", err)
	}
	// Through the command: refused before the store is touched.
	store := "file://" + filepath.Join(t.TempDir(), "none.db")
	out, err := runCommand(grantsCommands()[0], "add", "--store", store, "--policy", lib, "--sub", "bob", "--iss", "https://idp",
		"--resource", "nonexistent", "--duration", "1h", "--reason", "x")
	if err == nil || !strings.Contains(err.Error(), "names no such resource") {
		t.Errorf("grants add --resource nonexistent: %v\n%s", err, out)
	}
}
