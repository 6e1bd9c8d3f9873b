package gate

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// TestAuditLogIsDocumented keeps docs/audit-log.md complete: every
// result, every reason (the gate's, the session reasons and sign-in
// refusals of authn) and every event message the code can write is
// listed there, and every result the page lists exists.
func TestAuditLogIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/audit-log.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	listed := func(kind, v string) {
		if !strings.Contains(doc, "`"+v+"`") {
			t.Errorf("docs/audit-log.md does not list the %s `%s`", kind, v)
		}
	}
	for _, r := range Results {
		listed("result", string(r))
	}
	for _, r := range append(Reasons, SCIMReasons...) {
		listed("reason", string(r))
	}
	for _, e := range append(Events, SCIMEvents...) {
		listed("event", e)
	}
	for _, op := range []string{"add-grant", "revoke-grant", "deprovision", "logout-user"} {
		listed("event", op+" failed")
	}
	reasons := authnReasons(t)
	if len(reasons) < 25 {
		t.Fatalf("only %d reasons found in authn: is the parser still finding them?", len(reasons))
	}
	for _, r := range reasons {
		listed("reason", r)
	}
	for _, r := range append(authn.BearerReasons, authn.DPoPReasons...) {
		listed("reason", r)
	}
	for _, r := range authn.LogoutReasons {
		listed("reason", string(r))
	}

	// The results table lists nothing that does not exist.
	_, table, _ := strings.Cut(doc, "### Results")
	table, _, _ = strings.Cut(table, "###")
	known := map[string]bool{}
	for _, r := range Results {
		known[string(r)] = true
	}
	rows := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(table, -1)
	if len(rows) > 0 && rows[0][1] == "result" {
		rows = rows[1:] // the header
	}
	if len(rows) != len(Results) {
		t.Errorf("the results table has %d rows; there are %d results", len(rows), len(Results))
	}
	for _, m := range rows {
		if !known[m[1]] {
			t.Errorf("docs/audit-log.md lists the result `%s`, which the code never writes", m[1])
		}
	}
}

// authnReasons are the reasons authn gives: its Reason constants (why a
// request has no session) and the first argument of every refuse() (why
// a sign-in answer was refused).
func authnReasons(t *testing.T) []string {
	t.Helper()
	files, _ := filepath.Glob("../authn/*.go")
	var out []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				if id, ok := n.Type.(*ast.Ident); ok && id.Name == "Reason" {
					for _, v := range n.Values {
						if lit, ok := v.(*ast.BasicLit); ok {
							if s, _ := strconv.Unquote(lit.Value); s != "" {
								out = append(out, s)
							}
						}
					}
				}
			case *ast.CallExpr:
				if id, ok := n.Fun.(*ast.Ident); ok && id.Name == "refuse" && len(n.Args) > 0 {
					if lit, ok := n.Args[0].(*ast.BasicLit); ok {
						s, _ := strconv.Unquote(lit.Value)
						out = append(out, s)
					}
				}
			}
			return true
		})
	}
	return out
}
