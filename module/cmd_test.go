package module

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyEvalCommand(t *testing.T) {
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "p.rego"), []byte(testPolicy), 0o644)
	line := `{"level":"info","logger":"http.handlers.gatehouse.audit","msg":"decision","decision_id":"abc","result":"allow",
		"input":{"app":"x","user":{"sub":"a","groups":["admins"]},"request":{"path_lower":"/"},"grants":[],"now":1}}`
	in := filepath.Join(dir, "line.json")
	_ = os.WriteFile(in, []byte(line), 0o644)
	var out bytes.Buffer
	if err := policyEval(&out, dir, in, "data.gatehouse.decision", "full", "text"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "result   ALLOW; sets X-Role=admin") || !strings.Contains(out.String(), "trace (full):") {
		t.Errorf("output:\n%s", out.String())
	}
	out.Reset()
	_ = os.WriteFile(in, []byte(`{"app":"x","user":{"groups":[]},"request":{"path_lower":"/undeclared-x"}}`), 0o644)
	if err := policyEval(&out, dir, in, "data.gatehouse.decision", "off", "text"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `result   DENY; reason "nobody else"`) {
		t.Errorf("output:\n%s", out.String())
	}
	if err := policyEval(&out, dir, filepath.Join(dir, "missing.json"), "", "off", "text"); err == nil {
		t.Error("a missing input file was accepted")
	}
}
