package gatehouse

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestLayout keeps the package layout of DESIGN.md: authn, grants and
// policies import nothing of Caddy and nothing of each other; gate
// composes them and imports nothing of Caddy either; only module (and
// what builds Caddy) does. It reads the dependencies as the go command
// resolves them, test files excluded.
func TestLayout(t *testing.T) {
	const mod = "github.com/gatehouse-proxy/gatehouse/"
	allowed := map[string][]string{
		"authn":    nil,
		"grants":   nil,
		"policies": nil,
		"gate":     {"authn", "grants", "policies"},
	}
	for pkg, may := range allowed {
		out, err := exec.Command("go", "list", "-deps", "-json=ImportPath", "./"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		n := 0
		for dec.More() {
			var p struct{ ImportPath string }
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			n++
			switch dep := p.ImportPath; {
			case strings.HasPrefix(dep, "github.com/caddyserver/"):
				t.Errorf("%s depends on %s: it must know nothing of Caddy", pkg, dep)
			case strings.HasPrefix(dep, mod) && dep != mod+pkg:
				own := strings.TrimPrefix(dep, mod)
				ok := false
				for _, m := range may {
					ok = ok || own == m
				}
				if !ok {
					t.Errorf("%s imports %s; it may import only %v of this module", pkg, own, may)
				}
			}
		}
		if n < 10 {
			t.Errorf("%s: only %d dependencies listed; is go list working?", pkg, n)
		}
	}
}
