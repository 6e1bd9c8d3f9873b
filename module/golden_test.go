package module

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// Golden tests for what the caddyfile adapter makes of Gatehouse
// Caddyfiles, in the manner of Caddy's own caddytest adapt tests
// (caddytest/integration/caddyfile_adapt): the adapted JSON of every
// shipped example, and the full error message of malformed Caddyfiles.
// Run with -update to rewrite the goldens, then read the diff: a golden
// that blesses a bug is worse than none.

// exampleEnv gives every adapt-time variable ({$NAME} or {$NAME:default})
// of caddyfile-examples/*.Caddyfile a fixed value, in the shape the e2e
// tests give them (an https://localhost:<port> site, a loopback
// upstream), so that the .env.json goldens do not depend on the machine.
// An example that reads a variable missing here fails the test: add it.
var exampleEnv = map[string]string{
	"GATEHOUSE_SITE":     "https://localhost:8443",
	"GATEHOUSE_UPSTREAM": "127.0.0.1:9080",
	"WIKI_SITE":          "https://localhost:8444",
	"WIKI_UPSTREAM":      "127.0.0.1:9081",
	"CRM_SITE":           "https://localhost:8445",
	"CRM_UPSTREAM":       "127.0.0.1:9082",
}

// runtimeSentinel is what every runtime placeholder's variable
// ({env.NAME}) is set to while the examples are adapted: such a
// placeholder is resolved when the handler starts, never by the adapter,
// so the sentinel must not appear in the JSON.
const runtimeSentinel = "adapt-time-leak.invalid"

var (
	adaptVarRE   = regexp.MustCompile(`\{\$([A-Za-z0-9_]+)(:[^}]*)?\}`)
	runtimeVarRE = regexp.MustCompile(`\{env\.([A-Za-z0-9_]+)\}`)
)

// TestExampleCaddyfilesAdapt adapts every caddyfile-examples/*.Caddyfile
// twice and compares the JSON with testdata/examples/:
//
//   - <name>.json: no adapt-time variable set, so each {$NAME:default}
//     takes its default (the file as a reader sees it);
//   - <name>.env.json: every variable set from exampleEnv.
//
// The goldens hold only the JSON, not a copy of the Caddyfile as a
// .caddyfiletest would: the example itself is the input, and a second
// copy could drift from it unnoticed.
func TestExampleCaddyfilesAdapt(t *testing.T) {
	examples, _ := filepath.Glob("../caddyfile-examples/*.Caddyfile")
	if len(examples) == 0 {
		t.Fatal("no examples in ../caddyfile-examples")
	}
	for _, f := range examples {
		name := strings.TrimSuffix(filepath.Base(f), ".Caddyfile")
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		vars, defaults := map[string]bool{}, true
		for _, m := range adaptVarRE.FindAllStringSubmatch(string(src), -1) {
			vars[m[1]] = true
			if m[2] == "" {
				defaults = false
			}
		}
		for _, m := range runtimeVarRE.FindAllStringSubmatch(string(src), -1) {
			t.Setenv(m[1], runtimeSentinel)
		}
		t.Run(name+"/defaults", func(t *testing.T) {
			if !defaults {
				t.Skip("an adapt-time variable has no default")
			}
			for v := range vars {
				t.Setenv(v, "") // restored after the subtest
				os.Unsetenv(v)
			}
			compareExample(t, filepath.Base(f), src, "testdata/examples/"+name+".json")
		})
		t.Run(name+"/env", func(t *testing.T) {
			for v := range vars {
				val, ok := exampleEnv[v]
				if !ok {
					t.Fatalf("%s reads {$%s}, which exampleEnv does not set", f, v)
				}
				t.Setenv(v, val)
			}
			compareExample(t, filepath.Base(f), src, "testdata/examples/"+name+".env.json")
		})
	}
}

func compareExample(t *testing.T, filename string, src []byte, golden string) {
	t.Helper()
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": filename})
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("warning: %s:%d: %s", w.File, w.Line, w.Message)
	}
	if bytes.Contains(out, []byte(runtimeSentinel)) {
		t.Errorf("a runtime placeholder {env.X} was resolved by the adapter")
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "\t"); err != nil {
		t.Fatal(err)
	}
	got := pretty.String() + "\n"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./module -run TestExampleCaddyfilesAdapt -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("adapted JSON differs from %s (run go test ./module -run TestExampleCaddyfilesAdapt -update to accept):\n%s", golden, got)
	}
}

// errorMarker ends the line a golden error message must name first, so
// that a message that comes to name another line fails even after
// -update.
const errorMarker = "# <- error"

var errorLineRE = regexp.MustCompile(`, at Caddyfile:(\d+)`)

// TestCaddyfileErrorGoldens adapts every testdata/errors/*.caddyfiletest
// (a Caddyfile, a line of ten dashes, then the error message) and
// compares the adapter's whole error message, location included. The one
// line of the Caddyfile that ends with "# <- error" must be the line the
// message names first: the faulty line itself, or, for what a block
// lacks, the line that closes the block.
func TestCaddyfileErrorGoldens(t *testing.T) {
	files, _ := filepath.Glob("testdata/errors/*.caddyfiletest")
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
			marked := 0
			for i, line := range strings.Split(in, "\n") {
				if strings.HasSuffix(line, errorMarker) {
					if marked != 0 {
						t.Fatalf("%s: more than one line ends with %q", f, errorMarker)
					}
					marked = i + 1
				}
			}
			if marked == 0 {
				t.Fatalf("%s: no line ends with %q", f, errorMarker)
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(in), map[string]any{"filename": "Caddyfile"})
			if err == nil {
				t.Fatal("adapted without an error")
			}
			got := err.Error() + "\n"
			if m := errorLineRE.FindStringSubmatch(got); m == nil {
				t.Errorf("the error names no line: %s", got)
			} else if n, _ := strconv.Atoi(m[1]); n != marked {
				t.Errorf("the error names line %d, the line marked %q is %d: %s", n, errorMarker, marked, got)
			}
			if *update {
				if err := os.WriteFile(f, []byte(in+"----------\n"+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("error message differs (run go test ./module -run TestCaddyfileErrorGoldens -update to accept):\ngot:  %swant: %s", got, want)
			}
		})
	}
}
