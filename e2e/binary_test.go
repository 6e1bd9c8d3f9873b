package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinaryIsCaddy checks that the built binary is Caddy with Gatehouse:
// the usual subcommands work, and adapt --validate needs no network.
func TestBinaryIsCaddy(t *testing.T) {
	out, err := exec.Command(gatehouseBin, "list-modules").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "http.handlers.gatehouse") || !strings.Contains(string(out), "http.handlers.reverse_proxy") {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	env := append(os.Environ(), "HOME="+t.TempDir(),
		"GATEHOUSE_SITE=app.example.com",
		"GATEHOUSE_ISSUER=https://idp.invalid/realms/corp", // unreachable on purpose
		"GATEHOUSE_CLIENT_ID=legacy", "GATEHOUSE_CLIENT_SECRET=x",
		"GATEHOUSE_COOKIE_SECRET="+randomSecret(t))
	cmd := exec.Command(gatehouseBin, "adapt", "--config", "../caddyfile-examples/legacy-app.Caddyfile", "--validate")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `"handler":"gatehouse"`) {
		t.Fatalf("adapt --validate of the example, offline: %v\n%s", err, out)
	}
	cmd = exec.Command(gatehouseBin, "adapt", "--config", "../caddyfile-examples/legacy-app.Caddyfile", "--validate")
	cmd.Env = append(env, "GATEHOUSE_COOKIE_SECRET=too-short")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cookie_secret: secret #1 is 9 bytes after placeholders; it must be at least 32") {
		t.Fatalf("adapt --validate with a short secret: %v\n%s", err, out)
	}
}

// TestExamplesValidate adapts and validates every Caddyfile example, as
// `caddy adapt --validate` does, offline, and checks they are formatted.
func TestExamplesValidate(t *testing.T) {
	files, _ := filepath.Glob("../caddyfile-examples/*.Caddyfile")
	if len(files) < 3 {
		t.Fatalf("only %d examples", len(files))
	}
	env := append(os.Environ(), "HOME="+t.TempDir(),
		"GATEHOUSE_ISSUER=https://idp.invalid/realms/corp", "GATEHOUSE_CLIENT_ID=c", "GATEHOUSE_CLIENT_SECRET=s",
		"GATEHOUSE_COOKIE_SECRET="+randomSecret(t), "GATEHOUSE_POLICY=../policies", "GATEHOUSE_GRANTS=memory:",
		"EID_ISSUER=https://eid.invalid", "EID_CLIENT_ID=e", "EID_CLIENT_SECRET=s",
		"PARTNER_ISSUER=https://partner.invalid", "PARTNER_CLIENT_ID=p", "PARTNER_CLIENT_SECRET=s")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, _ := os.ReadFile(f)
			if !strings.HasPrefix(string(raw), "# For ") {
				t.Error("an example starts with a comment saying who it is for (# For …)")
			}
			cmd := exec.Command(gatehouseBin, "adapt", "--config", f, "--validate")
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("adapt --validate: %v\n%s", err, out)
			}
			out, err := exec.Command(gatehouseBin, "fmt", f).Output()
			if err != nil || string(out) != string(raw) {
				t.Errorf("not formatted: run gatehouse fmt --overwrite %s", f)
			}
		})
	}
}
