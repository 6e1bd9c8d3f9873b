package policies

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// writePolicy writes files (name → content) into a new directory.
func writePolicy(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadRefuses(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"syntax error", map[string]string{"p.rego": "package gatehouse\n\ndecision := {\n"}, "p.rego:4: rego_parse_error: unexpected eof token"},
		{"unknown input field", map[string]string{"p.rego": "package gatehouse\n\ndecision := {\"allow\": true} if {\n\tinput.usr.sub == \"a\"\n}\n"},
			"p.rego:4: rego_type_error: undefined ref: input.usr.sub"},
		{"input field of the wrong type", map[string]string{"p.rego": "package gatehouse\n\ndecision := {\"allow\": true} if {\n\tinput.request.path == 7\n}\n"},
			"p.rego:4: rego_type_error: match error"},
		{"decision is a string", map[string]string{"p.rego": "package gatehouse\n\ndecision := \"allow\"\n"},
			"p.rego:3: data.gatehouse.decision is string, must be a boolean or an object"},
		{"decision allow is a string", map[string]string{"p.rego": "package gatehouse\n\ndecision := {\"allow\": \"yes\"}\n"},
			"p.rego:3: data.gatehouse.decision.allow is string, must be a boolean"},
		{"decision with an unknown field", map[string]string{"p.rego": "package gatehouse\n\ndecision := {\"allow\": true, \"stepup\": {}}\n"},
			"has a field \"stepup\" the decision does not know"},
		{"no decision rule", map[string]string{"p.rego": "package other\n\nallow := true\n"}, "no rule defines data.gatehouse.decision"},
		{"no rego files", map[string]string{"data.json": "{}"}, "no .rego files"},
		{"bad data", map[string]string{"p.rego": "package gatehouse\n\ndecision := true\n", "data.json": "{"}, "data.json"},
		{"unknown built-in", map[string]string{"p.rego": "package gatehouse\n\ndecision := true if {\n\tnot_a_builtin(1)\n}\n"}, "p.rego:4: rego_type_error: undefined function not_a_builtin"},
	}
	for _, c := range cases {
		_, err := Load(context.Background(), writePolicy(t, c.files), Options{})
		if !errors.Is(err, ErrLoad) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v\nwant ErrLoad containing %q", c.name, err, c.want)
		}
	}
	if _, err := Load(context.Background(), filepath.Join(t.TempDir(), "missing"), Options{}); !errors.Is(err, ErrLoad) {
		t.Errorf("missing dir: %v", err)
	}
}

func TestLoadConflictingRulesIsAnEvaluationError(t *testing.T) {
	// Two complete rules that can both hold with different values compile
	// (OPA cannot prove they overlap) and fail at evaluation: deny.
	dir := writePolicy(t, map[string]string{"p.rego": "package gatehouse\n\ndecision := true if input.app == \"x\"\n\ndecision := false if input.now > 0\n"})
	rev, err := Load(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = rev.Decide(context.Background(), (&Input{App: "x", Now: 1}).Value())
	if !errors.Is(err, ErrPolicy) {
		t.Fatalf("err = %v, want ErrPolicy", err)
	}
}

func TestLoadSkipsTestsHiddenAndBackups(t *testing.T) {
	dir := writePolicy(t, map[string]string{
		"p.rego":               "package gatehouse\n\ndecision := true\n",
		"p_test.rego":          "package gatehouse_test\n\ntest_x if { false\n", // broken, but a test
		".p.rego.swp":          "garbage",
		"p.rego~":              "garbage",
		".hidden/q.rego":       "garbage",
		"testdata/broken.rego": "garbage",
		"sub/data.json":        `{"limit": 3}`,
		"sub/more.rego":        "package gatehouse.sub\n\nx := data.sub.limit\n",
	})
	rev, err := Load(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rev.Files, ",") != "p.rego,sub/more.rego" {
		t.Errorf("files %v", rev.Files)
	}
}

func TestLoadWarnsOnNondeterminism(t *testing.T) {
	dir := writePolicy(t, map[string]string{"p.rego": "package gatehouse\n\ndecision := true if {\n\ttime.now_ns() > 0\n}\n"})
	rev, err := Load(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rev.Warnings) != 1 || !strings.Contains(rev.Warnings[0], "p.rego:4: time.now_ns is not deterministic") {
		t.Errorf("warnings %q", rev.Warnings)
	}
}

func TestRevisionIDIsContent(t *testing.T) {
	files := map[string]string{"p.rego": "package gatehouse\n\ndecision := true\n", "data.json": `{"a": 1}`}
	a, _ := Load(context.Background(), writePolicy(t, files), Options{})
	b, _ := Load(context.Background(), writePolicy(t, files), Options{})
	files["data.json"] = `{"a": 2}`
	c, _ := Load(context.Background(), writePolicy(t, files), Options{})
	if a.ID != b.ID || a.ID == c.ID || len(a.ID) != 12 {
		t.Errorf("revision IDs %s %s %s", a.ID, b.ID, c.ID)
	}
}

func TestDecideFailsClosed(t *testing.T) {
	cases := []struct {
		name, policy string
		want         string
	}{
		{"undefined", "package gatehouse\n\ndecision := true if input.app == \"never\"\n", "undefined"},
		{"wrong shape at evaluation", "package gatehouse\n\ndecision := input.request.headers\n", "decision has no allow field"},
		{"a number from data", "package gatehouse\n\ndecision := data.limits.max\n", "decision is a number"},
		{"built-in error", "package gatehouse\n\ndecision := {\"allow\": to_number(input.app) > 1}\n", "to_number"},
		{"timeout", "package gatehouse\n\ndecision := {\"allow\": count([x | some x in numbers.range(1, 50000000)]) > 0}\n", "longer than"},
		{"bad header value", "package gatehouse\n\ndecision := {\"allow\": true, \"headers\": {\"X-A\": concat(\"\", [\"a\", \"\\n\"])}}\n", "control character"},
	}
	for _, c := range cases {
		files := map[string]string{"p.rego": c.policy, "limits/data.json": `{"max": 5}`}
		rev, err := Load(context.Background(), writePolicy(t, files), Options{Timeout: 20 * time.Millisecond})
		if err != nil {
			t.Errorf("%s: load: %v", c.name, err)
			continue
		}
		d, err := rev.Decide(context.Background(), (&Input{App: "payroll", Now: 5}).Value())
		if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), c.want) || d.Allow {
			t.Errorf("%s: Decide = %+v, %v; want ErrPolicy containing %q", c.name, d, err, c.want)
		}
	}
}

func TestParseDecision(t *testing.T) {
	good := map[string]Decision{
		`true`:                              {Allow: true},
		`false`:                             {Allow: false},
		`{"allow": true}`:                   {Allow: true},
		`{"allow": false, "reason": "why"}`: {Reason: "why"},
	}
	for in, want := range good {
		var v any
		_ = json.Unmarshal([]byte(in), &v)
		got, err := parseDecision(v)
		if err != nil || got.Allow != want.Allow || got.Reason != want.Reason {
			t.Errorf("parseDecision(%s) = %+v, %v", in, got, err)
		}
	}
	var v any
	_ = json.Unmarshal([]byte(`{"allow": true, "reason": "r", "headers": {"X-Role": "admin"},
		"request_grant": {"resource": "db", "max_duration": "4h"},
		"step_up": {"acr": ["b", "a"], "amr": "otp", "max_age": "5m"}}`), &v)
	d, err := parseDecision(v)
	if err != nil || d.Headers["X-Role"] != "admin" || d.RequestGrant.Resource != "db" || d.RequestGrant.MaxDuration != 4*time.Hour ||
		strings.Join(d.StepUp.ACR, ",") != "a,b" || d.StepUp.AMR[0] != "otp" || d.StepUp.MaxAge != 5*time.Minute {
		t.Errorf("full decision: %+v %+v %+v, %v", d, d.RequestGrant, d.StepUp, err)
	}
	bad := []string{
		`"allow"`, `1`, `null`, `[]`, `{}`,
		`{"allow": "true"}`,
		`{"allow": true, "Allow": true}`,
		`{"allow": true, "stepup": {}}`,
		`{"allow": true, "reason": 3}`,
		`{"allow": true, "headers": ["X-A"]}`,
		`{"allow": true, "headers": {"X-A": 1}}`,
		`{"allow": true, "headers": {"X-A": "a\r\nb"}}`,
		`{"allow": false, "request_grant": "db"}`,
		`{"allow": false, "request_grant": {"resource": "db"}}`,
		`{"allow": false, "request_grant": {"resource": "db", "max_duration": "forever"}}`,
		`{"allow": false, "request_grant": {"resource": "db", "max_duration": "-1h"}}`,
		`{"allow": false, "request_grant": {"resource": "db", "max_duration": "1h", "extra": 1}}`,
		`{"allow": true, "step_up": {}}`,
		`{"allow": true, "step_up": {"acr": [1]}}`,
		`{"allow": true, "step_up": {"acr": ["x"], "maxage": "5m"}}`,
		`{"allow": true, "step_up": {"acr": "x", "max_age": 300}}`,
	}
	for _, in := range bad {
		var v any
		if err := json.Unmarshal([]byte(in), &v); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if d, err := parseDecision(v); !errors.Is(err, ErrPolicy) {
			t.Errorf("parseDecision(%s) = %+v, %v; want ErrPolicy", in, d, err)
		}
	}
}

func TestInputValueMatchesJSON(t *testing.T) {
	in := &Input{
		App: "payroll", Now: 1764000030, NowMinute: MinuteOf(1764000030),
		User: User{Sub: "alice", Iss: "https://idp", Email: "a@example.com", Name: "Alice", Groups: []string{"staff"},
			ACR: "urn:mfa", AMR: []string{"pwd", "otp"}, AuthTime: 1763999000,
			Verifications: map[string]map[string]any{"eid": {"acr": "high", "auth_time": int64(1763999500), "birthdate": "1990-01-01"}}},
		Session: Session{AgeS: 120, IdleS: 30},
		Request: Request{Method: "GET", Host: "payroll.example.com", Path: "/Admin/x", PathLower: "/admin/x", RawPath: "/%41dmin/x",
			Query: map[string][]string{"b": {"2"}, "a": {"1", "3"}}, RemoteIP: "203.0.113.9", Headers: map[string]string{"user-agent": "x"}},
		AccessReq: &AccessRequest{Requester: Requester{Sub: "alice", Iss: "https://idp"}, Resource: "r", Reason: "why", Duration: "1h"},
		Principal: Principal{Kind: "user", Via: "token"}, Token: Token{ClientID: "mobile", Scopes: []string{"payroll:read"}},
		RevokedResources: []string{"/payslips", "payroll-reports"},
		ReviewItem: &ReviewItem{Review: "quarterly", User: Requester{Sub: "bob", Iss: "https://idp", Email: "bob@example.com"},
			Resource: "payroll-reports", Source: "grant", ApprovedBy: "carol@example.com", LastUsed: 1763990000, Count: 12},
	}
	in.Version = InputVersion
	in.SetGrants([]Grant{{Resource: "payroll-admin", ExpiresAt: 1764003600, ApprovedBy: "m@example.com"}, {Resource: "a", ExpiresAt: 1764003600}, {Resource: "a", ExpiresAt: 1764003700}})
	if got := strings.Join(in.GrantResources, ","); got != "a,payroll-admin" || in.NowMinute != 1764000000 {
		t.Fatalf("grant_resources %q, now_minute %d", got, in.NowMinute)
	}
	b, _ := json.Marshal(in)
	want, err := ast.ValueFromReader(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if got := in.Value(); got.Compare(want) != 0 {
		t.Errorf("Value() differs from the JSON form:\n got %v\nwant %v", got, want)
	}
}

// FuzzParseDecision feeds any JSON to the decision parser: it may refuse
// it, but never panics, and what it accepts is safe to act on.
func FuzzParseDecision(f *testing.F) {
	for _, s := range []string{`true`, `{"allow": true}`, `{"allow": false, "reason": "r", "request_grant": {"resource": "db", "max_duration": "4h"}}`,
		`{"allow": true, "step_up": {"acr": ["a"], "max_age": "5m"}, "headers": {"X-A": "b"}}`, `{"allow": 1}`, `[]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var v any
		if json.Unmarshal([]byte(in), &v) != nil {
			return
		}
		d, err := parseDecision(v)
		if err != nil {
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("an error that is not ErrPolicy: %v", err)
			}
			if d.Allow {
				t.Fatalf("an invalid decision allows: %s", in)
			}
			return
		}
		if g := d.RequestGrant; g != nil && (g.Resource == "" || g.MaxDuration <= 0) {
			t.Fatalf("accepted an empty offer: %s", in)
		}
		for k, v := range d.Headers {
			if strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("accepted a header %q with a control character", k)
			}
		}
	})
}
