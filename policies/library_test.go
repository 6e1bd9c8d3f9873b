package policies

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/tester"
)

// TestRegoLibrary runs the library's *_test.rego with OPA's tester, as
// `opa test policies/` does.
func TestRegoLibrary(t *testing.T) {
	results, err := tester.Run(context.Background(), ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(results) == 0 {
		t.Fatal("no Rego tests found")
	}
	for _, r := range results {
		if r.Error != nil {
			t.Errorf("%s.%s: %v", r.Package, r.Name, r.Error)
			continue
		}
		if r.Fail {
			t.Errorf("%s.%s failed:\n%s", r.Package, r.Name, r.SubResults)
		}
		for name, sr := range r.SubResults.Iter {
			if sr.Fail {
				t.Errorf("%s.%s: case %q failed", r.Package, r.Name, name)
			}
		}
	}
	t.Logf("%d Rego tests", len(results))
}

// TestLibraryLoads checks that the shipped library is what Gatehouse
// serves: it loads, has both queries and no warnings.
func TestLibraryLoads(t *testing.T) {
	rev, err := Load(context.Background(), ".", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rev.approval == nil {
		t.Error("the library defines no approval")
	}
	if len(rev.Warnings) != 0 {
		t.Errorf("warnings: %v", rev.Warnings)
	}
	for _, f := range rev.Files {
		if len(f) > 10 && f[len(f)-10:] == "_test.rego" {
			t.Errorf("a test file is served: %s", f)
		}
	}
}
