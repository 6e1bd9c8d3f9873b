package module

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestCaddyfileAdapt adapts every testdata/adapt/*.caddyfiletest: a
// Caddyfile, a line of ten dashes, then the expected JSON.
func TestCaddyfileAdapt(t *testing.T) {
	files, _ := filepath.Glob("testdata/adapt/*.caddyfiletest")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in, want, ok := strings.Cut(string(raw), "----------\n")
			if !ok {
				t.Fatalf("%s: no ---------- separator", f)
			}
			out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(in), map[string]any{"filename": "Caddyfile"})
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: line %d: %s", w.Line, w.Message)
			}
			var pretty bytes.Buffer
			_ = json.Indent(&pretty, out, "", "\t")
			got := pretty.String() + "\n"
			if *update {
				_ = os.WriteFile(f, []byte(in+"----------\n"+got), 0o644)
				return
			}
			if got != want {
				t.Errorf("adapted JSON differs (run go test ./module -run TestCaddyfileAdapt -update to accept):\n%s", got)
			}
		})
	}
}

func TestCaddyfileRepeatable(t *testing.T) {
	in := `gatehouse {
	cookie_secret {env.NEW} {env.OLD}
	cookie_secret {env.OLDER}
	public /a
	public /b /c
	identity_header X-A email
	identity_header X-B sub
	allow_groups g1
	allow_groups g2 g3
	trust_unverified_email
}`
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	if strings.Join(h.CookieSecrets, " ") != "{env.NEW} {env.OLD} {env.OLDER}" ||
		strings.Join(h.Public, " ") != "/a /b /c" ||
		len(h.IdentityHeaders) != 2 || strings.Join(h.AllowGroups, " ") != "g1 g2 g3" || !h.TrustUnverifiedEmail {
		t.Errorf("parsed %+v", h)
	}
}

// FuzzUnmarshalCaddyfile feeds arbitrary blocks to the parser: it may
// refuse them, but must never panic.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	f.Add("gatehouse {\n\tapp x\n\tissuer https://idp\n}")
	f.Add("gatehouse {\n\tidentity_header X-A email\n\tpublic /a /b\n}")
	f.Add("gatehouse {\n\tcookie_secret {env.A} {file./x}\n\tidle_timeout 1d\n}")
	f.Fuzz(func(t *testing.T, in string) {
		tokens, err := caddyfile.Tokenize([]byte(in), "Caddyfile")
		if err != nil || len(tokens) == 0 {
			return
		}
		var h Handler
		_ = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}

// TestCaddyfileSyntaxIsDocumented keeps the syntax in two places in step
// with the parser: the godoc of UnmarshalCaddyfile (Caddy's idiom) and
// docs/caddyfile.md name exactly the subdirectives the parser takes.
func TestCaddyfileSyntaxIsDocumented(t *testing.T) {
	firstWords := func(file, start, prefix string) map[string]bool {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		_, block, ok := strings.Cut(string(b), start)
		if !ok {
			t.Fatalf("%s: no %q", file, start)
		}
		names := map[string]bool{}
		for line := range strings.SplitSeq(block, "\n") {
			rest, ok := strings.CutPrefix(line, prefix)
			if !ok {
				if strings.TrimSpace(strings.TrimPrefix(line, "//")) == "}" {
					break
				}
				continue
			}
			if f := strings.Fields(rest); len(f) > 0 && f[0] != "}" && rest[0] != ' ' && rest[0] != '\t' {
				names[f[0]] = true // not a nested block's setting, indented further
			}
		}
		return names
	}
	godoc := firstWords("caddyfile.go", "//\tgatehouse {\n", "//\t    ")
	docs := firstWords("../docs/caddyfile.md", "```caddyfile\ngatehouse {\n", "\t")
	if len(godoc) < 30 || len(docs) < 30 {
		t.Fatalf("read %d subdirectives from the godoc and %d from the docs: is the syntax block still there?", len(godoc), len(docs))
	}
	for name := range godoc {
		if !docs[name] {
			t.Errorf("%s is in UnmarshalCaddyfile's godoc but not in docs/caddyfile.md", name)
		}
		err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser("gatehouse {\n\t" + name + "\n}"))
		if err != nil && strings.Contains(err.Error(), "unknown gatehouse subdirective") {
			t.Errorf("%s is documented but the parser does not know it", name)
		}
	}
	for name := range docs {
		if !godoc[name] {
			t.Errorf("%s is in docs/caddyfile.md but not in UnmarshalCaddyfile's godoc", name)
		}
	}
	for _, name := range append(append([]string{}, slices.Collect(maps.Keys(repeatable))...), "app", "issuer", "grants_timeout", "policy_cache") {
		if !godoc[name] {
			t.Errorf("the parser takes %s, which the godoc does not show", name)
		}
	}
	// The names suggested for a misspelt one are the documented ones.
	for name := range godoc {
		if !slices.Contains(subdirectives, name) {
			t.Errorf("%s is documented but not in subdirectives (the names suggested for typos)", name)
		}
	}
	for _, name := range subdirectives {
		if !godoc[name] {
			t.Errorf("subdirectives lists %s, which the godoc does not show", name)
		}
	}
}

// TestNearest: a misspelt setting gets the nearest known one, a name
// nothing resembles gets no suggestion.
func TestNearest(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"isuer", "issuer"}, {"cookie_secrets", "cookie_secret"}, {"idle_timout", "idle_timeout"},
		{"allow_group", "allow_groups"}, {"stepup", "step_up"}, {"Issuer", "issuer"}, {"client_secrett", "client_secret"},
		{"frobnicate", ""}, {"x", ""}, {"", ""}, {"polcy", "policy"}, {"trust_unverified", "trust_unverified_email"},
	} {
		if got := nearest(c.in, subdirectives); got != c.want {
			t.Errorf("nearest(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
