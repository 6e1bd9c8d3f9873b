package policies

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
