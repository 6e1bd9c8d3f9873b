package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// xcaddyVersion is the xcaddy the test builds with, from the Go module
// proxy.
const xcaddyVersion = "v0.4.5"

// TestXcaddyBuild runs the xcaddy build command written in
// xcaddy.Dockerfile (with /src being this checkout), so the Dockerfile and
// the module cannot drift apart, and checks the result is Caddy with
// Gatehouse. It also checks the Dockerfile's Caddy version is go.mod's.
func TestXcaddyBuild(t *testing.T) {
	df, err := os.ReadFile("../xcaddy.Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RUN (xcaddy build .*)$`).FindStringSubmatch(string(df))
	if m == nil {
		t.Fatal("no `RUN xcaddy build …` line in xcaddy.Dockerfile")
	}
	gomod, _ := os.ReadFile("../go.mod")
	caddyVersion := regexp.MustCompile(`github.com/caddyserver/caddy/v2 (v[0-9.]+)`).FindStringSubmatch(string(gomod))
	if caddyVersion == nil {
		t.Fatal("no Caddy version in go.mod")
	}
	if !strings.Contains(m[1], "xcaddy build "+caddyVersion[1]+" ") {
		t.Errorf("the Dockerfile builds %q, go.mod has Caddy %s", m[1], caddyVersion[1])
	}
	for _, img := range []string{"FROM caddy:" + strings.TrimPrefix(caddyVersion[1], "v") + "-builder", "FROM caddy:" + strings.TrimPrefix(caddyVersion[1], "v")} {
		if !strings.Contains(string(df), img) {
			t.Errorf("the Dockerfile does not use %s", img)
		}
	}
	for _, want := range []string{"USER gatehouse", "HEALTHCHECK", "/.gatehouse/healthz", "VOLUME", "/etc/gatehouse/policies", "/var/lib/gatehouse"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}

	root, _ := filepath.Abs("..")
	out := filepath.Join(t.TempDir(), "caddy")
	args := strings.Fields(strings.ReplaceAll(m[1], "=/src", "="+root))[1:] // drop "xcaddy"
	args = append(args, "--output", out)
	cmd := exec.Command("go", append([]string{"run", "github.com/caddyserver/xcaddy/cmd/xcaddy@" + xcaddyVersion}, args...)...)
	cmd.Env = append(os.Environ(), "XCADDY_SKIP_CLEANUP=0")
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xcaddy %v: %v\n%s", args, err, b)
	}
	t.Logf("xcaddy build took %s", time.Since(start).Round(time.Second))
	list, err := exec.Command(out, "list-modules").Output()
	if err != nil || !strings.Contains(string(list), "http.handlers.gatehouse") || !strings.Contains(string(list), "admin.api.gatehouse") {
		t.Fatalf("the xcaddy build lists:\n%s (%v)", list, err)
	}
	ver, _ := exec.Command(out, "version").Output()
	if !strings.HasPrefix(string(ver), caddyVersion[1]) {
		t.Errorf("built Caddy %s, want %s", ver, caddyVersion[1])
	}
	// Gatehouse is a dependency here, so Caddy shows its version (the
	// Dockerfile's @v0.0.0), and its command is `caddy gatehouse`.
	list, _ = exec.Command(out, "list-modules", "--versions", "--skip-standard").Output()
	if !regexp.MustCompile(`(?m)^http\.handlers\.gatehouse v0\.0\.0$`).Match(list) {
		t.Errorf("list-modules --versions of the xcaddy build:\n%s", list)
	}
	help, _ := exec.Command(out, "gatehouse", "--help").Output()
	if !strings.Contains(string(help), filepath.Base(out)+" gatehouse policy check DIR") {
		t.Errorf("the xcaddy build's gatehouse --help:\n%s", help)
	}
}
