package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestRunTests(t *testing.T) {
	var out bytes.Buffer
	if err := RunTests(context.Background(), &out, "."); err != nil || !strings.Contains(out.String(), "PASS: ") {
		t.Fatalf("library tests: %v\n%s", err, out.String())
	}
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package x\n\nv := 1\n"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "p_test.rego"), []byte("package x_test\n\nimport data.x\n\ntest_v if x.v == 2\n"), 0o644)
	out.Reset()
	if err := RunTests(context.Background(), &out, dir); err == nil || !strings.Contains(out.String(), "FAIL  data.x_test.test_v") {
		t.Fatalf("a failing test passed: %v\n%s", err, out.String())
	}
}

// TestReadInput: an input is the documented input or nothing: an audit
// line without input, an unknown field, a wrong type or (without partial)
// a missing field is refused with the field's name.
func TestReadInput(t *testing.T) {
	full := func() map[string]any {
		in := realisticInput()
		in.Version, in.User.Verifications = InputVersion, map[string]map[string]any{}
		b, _ := json.Marshal(in)
		var doc map[string]any
		_ = json.Unmarshal(b, &doc)
		return doc
	}
	encode := func(v any) string { b, _ := json.Marshal(v); return string(b) }

	if rp, err := ReadInput(strings.NewReader(encode(full())), false); err != nil || len(rp.Missing) != 0 || rp.DecisionID != "" {
		t.Fatalf("a whole input: %+v %v", rp, err)
	}
	// An input logged before version 2 (sessions only) replays as a
	// person's session.
	v1 := full()
	v1["version"] = 1
	delete(v1, "principal")
	delete(v1, "token")
	delete(v1["user"].(map[string]any), "idp")
	if rp, err := ReadInput(strings.NewReader(encode(v1)), false); err != nil {
		t.Fatalf("a version 1 input: %v", err)
	} else if k, _ := rp.Input.(ast.Object).Find(ast.Ref{ast.StringTerm("principal"), ast.StringTerm("via")}); k == nil || k.String() != `"session"` {
		t.Errorf("a version 1 input reads principal.via %v", k)
	}
	line := map[string]any{"level": "info", "logger": "http.handlers.gatehouse.audit", "msg": "decision", "decision_id": "d1", "input": full()}
	if rp, err := ReadInput(strings.NewReader(encode(line)), false); err != nil || rp.DecisionID != "d1" {
		t.Fatalf("an audit line with its input: %+v %v", rp, err)
	}
	// Lines that logged no grants as null replay as the policy saw them.
	line["input"].(map[string]any)["grants"] = nil
	if rp, err := ReadInput(strings.NewReader(encode(line)), false); err != nil {
		t.Fatalf("an audit line with grants null: %v", err)
	} else if v, _ := rp.Input.(ast.Object).Find(ast.Ref{ast.StringTerm("grants")}); v == nil || v.String() != "[]" {
		t.Errorf("grants replayed as %v", v)
	}

	cases := []struct {
		name    string
		doc     string
		partial bool
		is      error
		want    []string
	}{
		{"audit line without input", `{"level":"info","logger":"http.handlers.gatehouse.audit","msg":"decision","decision_id":"d2","result":"deny","path":"/x"}`,
			false, ErrNoInput, []string{"decision d2", "decision_log full"}},
		{"audit line without input, partial", `{"msg":"decision","decision_id":"d2"}`, true, ErrNoInput, []string{"decision_log full"}},
		{"unknown field", `{"usr":{"groups":["admins"]}}`, true, ErrInput, []string{"input.usr: unknown field"}},
		{"unknown nested field", `{"user":{"groups":["admins"],"role":"x"}}`, true, ErrInput, []string{"input.user.role: unknown field"}},
		{"wrong type", `{"request":{"path":7}}`, true, ErrInput, []string{"input.request.path: want a string, got 7"}},
		{"not an integer", `{"now":1.5}`, true, ErrInput, []string{"input.now: want an integer, got 1.5"}},
		{"null", `{"user":null}`, true, ErrInput, []string{"input.user: null"}},
		{"wrong item", `{"user":{"groups":["a",3]}}`, true, ErrInput, []string{"input.user.groups[1]: want a string"}},
		{"header names", `{"request":{"headers":{"user-agent":1}}}`, true, ErrInput, []string{`input.request.headers["user-agent"]: want a string`}},
		{"other version", `{"version":3}`, true, ErrInput, []string{"input version 3"}},
		{"partial without --partial", `{"app":"x","user":{"groups":["admins"]}}`, false, ErrIncomplete, []string{"input.user.iss", "input.now"}},
		{"not JSON", `{"app":`, false, nil, []string{"not a JSON object"}},
	}
	for _, c := range cases {
		_, err := ReadInput(strings.NewReader(c.doc), c.partial)
		if err == nil || (c.is != nil && !errors.Is(err, c.is)) {
			t.Errorf("%s: %v, want %v", c.name, err, c.is)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", c.name, err, w)
			}
		}
	}
	rp, err := ReadInput(strings.NewReader(`{"app":"x","user":{"groups":["admins"]}}`), true)
	if err != nil || !slices.Contains(rp.Missing, "input.user.iss") || !slices.Contains(rp.Missing, "input.now") || slices.Contains(rp.Missing, "input.app") {
		t.Errorf("partial input: %+v %v", rp, err)
	}
}

// TestLoggedInputIsValid: what the decision log writes with decision_log
// full (NewInput with whole set, then JSON) is a whole input by the
// schema, for a request and for an access request, so every logged
// decision replays without --partial.
func TestLoggedInputIsValid(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "https://app.example/Admin/x?page=2", nil)
	r.Header.Set("User-Agent", "test")
	src := Source{App: "payroll", User: User{Sub: "s", Iss: "https://idp"}, HTTP: r, Path: "/Admin/x", RemoteIP: "192.0.2.1",
		Headers: []string{"User-Agent"}, HeadersLower: []string{"user-agent"}, Now: time.Unix(1795597230, 0)}
	for _, withRequest := range []bool{false, true} {
		in := NewInput(&src, nil, true)
		if withRequest {
			in.AccessReq = &AccessRequest{Requester: Requester{Sub: "b", Iss: "https://idp"}, Resource: "r", Duration: "1h"}
		}
		b, err := json.Marshal(in.Redacted(nil))
		if err != nil {
			t.Fatal(err)
		}
		if rp, err := ReadInput(bytes.NewReader(b), false); err != nil || len(rp.Missing) != 0 {
			t.Errorf("logged input %s: %v", b, err)
		}
	}
}

// TestCheck: `policy check` loads a directory as the engine does, and
// prints OK with the revision or each error with its file and line.
func TestCheck(t *testing.T) {
	var out bytes.Buffer
	if err := Check(context.Background(), &out, ".", Options{}); err != nil || !strings.HasPrefix(out.String(), "OK .: revision ") {
		t.Fatalf("the library: %v\n%s", err, out.String())
	}
	dir := writePolicy(t, map[string]string{"gatehouse/p.rego": "package gatehouse\n\ndecision := {\"allow\": x}\n\nx if \"admins\" in input.usr.groups\n\ny := input.request.pth\n"})
	out.Reset()
	err := Check(context.Background(), &out, dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "2 errors") {
		t.Errorf("a bad policy: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "gatehouse/p.rego:5: rego_type_error: undefined ref: input.usr.groups") ||
		!strings.HasPrefix(lines[1], "gatehouse/p.rego:7: rego_type_error: undefined ref: input.request.pth") {
		t.Errorf("errors:\n%s", out.String())
	}
	syntax := writePolicy(t, map[string]string{"p.rego": "package gatehouse\n\ndecision := {\n"})
	out.Reset()
	if err := Check(context.Background(), &out, syntax, Options{}); err == nil || !strings.HasPrefix(out.String(), "p.rego:4: rego_parse_error:") {
		t.Errorf("a syntax error: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := Check(context.Background(), &out, ".", Options{Query: "data.gatehouse.nothing"}); err == nil || !strings.Contains(err.Error(), "no rule defines data.gatehouse.nothing") {
		t.Errorf("another policy_query: %v", err)
	}
}

// TestOPACheckWithSchema: `opa check --strict --schema
// docs/input.schema.json`, which the docs give security teams for their
// own pipelines, refuses a policy reading a field the input does not have
// (which plain `opa check --strict` passes), and passes the library.
func TestOPACheckWithSchema(t *testing.T) {
	bad := writePolicy(t, map[string]string{"p.rego": "package gatehouse\n\ndefault decision := false\n\ndecision if \"admins\" in input.usr.groups\n"})
	opaCheck := func(dir string) (string, error) {
		out, err := exec.Command("go", "tool", "opa", "check", "--strict", "--schema", "../docs/input.schema.json", dir).CombinedOutput()
		return string(out), err
	}
	if out, err := opaCheck(bad); err == nil || !strings.Contains(out, "p.rego:5: rego_type_error: undefined ref: input.usr.groups") {
		t.Errorf("opa check --schema passed input.usr.groups: %v\n%s", err, out)
	}
	if out, err := opaCheck("."); err != nil {
		t.Errorf("opa check --schema refused the library: %v\n%s", err, out)
	}
}

// TestGrantable: the library names every app's resources; a policy
// without the rule says so.
func TestGrantable(t *testing.T) {
	rev, err := Load(context.Background(), ".", Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := rev.Grantable(context.Background())
	if err != nil || !slices.Equal(got, []string{"legacy-app", "payroll-admin", "payroll-reports", "projects-admin", "projects-app"}) {
		t.Errorf("library: %v %v", got, err)
	}
	bare, err := Load(context.Background(), writePolicy(t, map[string]string{"p.rego": "package gatehouse\n\ndecision := true\n"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bare.Grantable(context.Background()); !errors.Is(err, ErrNoGrantable) {
		t.Errorf("a policy without grantable: %v", err)
	}
}

// FuzzReadInput: whatever the file holds, reading it never panics, and
// what it accepts is an object with no missing field unless partial.
func FuzzReadInput(f *testing.F) {
	f.Add([]byte(`{"app":"x","user":{"groups":["a"]},"request":{"headers":{"user-agent":"x"}}}`), true)
	f.Add([]byte(`{"msg":"decision","decision_id":"d","input":{"now":1,"grants":null}}`), false)
	f.Add([]byte(`{"version":1.0e0,"now":-1,"user":{"verifications":{"eid":{"acr":1}}}}`), true)
	f.Add([]byte(`[1,2]`), false)
	f.Fuzz(func(t *testing.T, b []byte, partial bool) {
		rp, err := ReadInput(bytes.NewReader(b), partial)
		if err != nil {
			return
		}
		if _, ok := rp.Input.(ast.Object); !ok {
			t.Fatalf("accepted %q as %T", b, rp.Input)
		}
		if !partial && len(rp.Missing) > 0 {
			t.Fatalf("accepted %q missing %v", b, rp.Missing)
		}
	})
}
