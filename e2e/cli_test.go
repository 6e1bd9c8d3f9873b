package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// ghCLI runs the built binary's gatehouse command with args and returns
// its output (stdout and stderr) and error.
func ghCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(gatehouseBin, append([]string{"gatehouse"}, args...)...)
	// Only what the flags say: no store, policy or admin address from
	// the environment.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "GATEHOUSE_GRANTS" && k != "GATEHOUSE_POLICY" && k != "CADDY_ADMIN" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startEmbedded runs the contractor-jit example on one node with the
// embedded grant store and the admin API at admin; it returns the node,
// its site, the IdP and the store's URL.
func startEmbedded(t *testing.T, admin string) (*gatehouse, string, *idp, string) {
	t.Helper()
	site := fmt.Sprintf("https://localhost:%d", freePort(t))
	p := startIdP(t, idpClient{ClientID: "cli", ClientSecret: "cli-secret",
		RedirectURIs: []string{site + "/.gatehouse/callback"}, PostLogoutRedirectURIs: []string{site + "/.gatehouse/logout"}})
	up := startUpstream(t)
	example, err := os.ReadFile("../caddyfile-examples/contractor-jit.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	policy, _ := filepath.Abs("../policies")
	store := "file://" + filepath.Join(t.TempDir(), "grants.db")
	env := []string{"GATEHOUSE_SITE=" + site, "GATEHOUSE_ISSUER=" + p.Issuer, "GATEHOUSE_CLIENT_ID=cli",
		"GATEHOUSE_CLIENT_SECRET=cli-secret", "GATEHOUSE_COOKIE_SECRET=" + randomSecret(t), "GATEHOUSE_GRANTS=" + store,
		"GATEHOUSE_POLICY=" + policy, "GATEHOUSE_UPSTREAM=" + up.Listener.Addr().String()}
	return startGatehouseAdmin(t, admin, string(example), env, site), site, p, store
}

// TestCLIUnixSocketAdmin: with the admin API on a Unix socket (Caddy's
// recommended hardening), the ops CLI manages the embedded store the
// running Gatehouse holds, finding the socket with --admin or in the
// Caddyfile with --config; a user who only signed in is named by email;
// lists show the issuer; an unknown resource is refused with the known
// ones.
func TestCLIUnixSocketAdmin(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	gh, site, p, store := startEmbedded(t, "unix/"+sock)
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("no admin socket: %v", err)
	}
	lib, _ := filepath.Abs("../policies")

	// carol (staff) signs in once: no grant, no request.
	carol := newBrowser(t, gh)
	mustStatus(t, carol.login(site+"/work/1", "carol"), http.StatusOK)

	// Through the Caddyfile: the CLI reads the socket's address there.
	out, err := ghCLI(t, "grants", "add", "--store", store, "--config", gh.config, "--adapter", "caddyfile",
		"--user", "dave@partner.example", "--sub", "dave", "--iss", p.Issuer, "--resource", "projects-app",
		"--duration", "1h", "--reason", "e2e", "--by", "ops", "--policy", lib)
	if err != nil || !strings.Contains(out, "projects-app") {
		t.Fatalf("grants add --config: %v\n%s", err, out)
	}
	if findAudit(auditLine("msg", "grant approved", "user", "dave"), gh) == nil {
		t.Error("the running Gatehouse did not audit the grant added through its admin socket")
	}
	// The text list names the issuer, the JSON too.
	out, err = ghCLI(t, "grants", "list", "--store", store, "--admin", "unix/"+sock)
	if err != nil || !regexp.MustCompile(`(?m)^\S+\s+dave\s+`+regexp.QuoteMeta(p.Issuer)+`\s+dave@partner.example\s+projects-app\s+active`).MatchString(out) ||
		!strings.Contains(out, "ISSUER") {
		t.Errorf("grants list:\n%s (%v)", out, err)
	}
	out, err = ghCLI(t, "grants", "list", "--store", store, "--admin", "unix/"+sock, "--json")
	var list struct {
		Grants []struct {
			User struct{ Iss, Sub string }
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Grants) != 1 || list.Grants[0].User.Iss != p.Issuer || list.Grants[0].User.Sub != "dave" {
		t.Errorf("grants list --json: %v\n%s", err, out)
	}
	// A resource the policy cannot grant.
	out, err = ghCLI(t, "grants", "add", "--store", store, "--admin", "unix/"+sock, "--policy", lib, "--sub", "dave", "--iss", p.Issuer,
		"--resource", "nonexistent", "--duration", "1h", "--reason", "e2e")
	if err == nil || !strings.Contains(out, `--resource "nonexistent"`) || !strings.Contains(out, "projects-admin, projects-app") {
		t.Errorf("grants add --resource nonexistent: %v\n%s", err, out)
	}

	// carol, who only signed in, is named by her email: logged out on the
	// running node.
	out, err = ghCLI(t, "users", "logout", "--store", store, "--admin", "unix/"+sock, "--user", "carol@example.com", "--reason", "e2e", "--by", "ops")
	if err != nil || !strings.Contains(out, "user carol ("+p.Issuer+")") {
		t.Fatalf("users logout --user carol@example.com: %v\n%s", err, out)
	}
	waitStatus(t, carol, site+"/work/1", http.StatusUnauthorized, 2*time.Second)
	// An email nobody signed in with.
	out, err = ghCLI(t, "users", "deprovision", "--store", store, "--admin", "unix/"+sock, "--user", "nobody@example.com")
	if err == nil || !strings.Contains(out, "no user with the email nobody@example.com") || !strings.Contains(out, "--iss and --sub") {
		t.Errorf("an unknown email: %v\n%s", err, out)
	}

	// Another socket that nobody serves: the file is held, so the error
	// names the address tried and why.
	gone := "unix/" + filepath.Join(t.TempDir(), "gone.sock")
	out, err = ghCLI(t, "grants", "list", "--store", store, "--admin", gone)
	if err == nil || !strings.Contains(out, "tried "+gone) || !strings.Contains(out, "locked by another process") {
		t.Errorf("an admin socket nobody serves: %v\n%s", err, out)
	}
}

// TestCLIAdminOff: with `admin off`, the CLI cannot reach the running
// Gatehouse's embedded store, and says why: the config turns the admin
// API off (with --config), or the address it tried did not answer.
func TestCLIAdminOff(t *testing.T) {
	gh, _, _, store := startEmbedded(t, "off")
	out, err := ghCLI(t, "grants", "list", "--store", store, "--config", gh.config, "--adapter", "caddyfile")
	if err == nil || !strings.Contains(out, "admin off") || !strings.Contains(out, gh.config) || !strings.Contains(out, "Unix socket") {
		t.Errorf("with --config of an admin-off Gatehouse: %v\n%s", err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	out, err = ghCLI(t, "grants", "list", "--store", store, "--admin", addr)
	if err == nil || !strings.Contains(out, "tried "+addr) || !strings.Contains(out, "connection refused") {
		t.Errorf("with --admin nobody serves: %v\n%s", err, out)
	}
	// Without either: the default address, and the way out.
	out, err = ghCLI(t, "grants", "list", "--store", store)
	if err == nil || !strings.Contains(out, "tried localhost:2019") || !strings.Contains(out, "--admin") {
		t.Errorf("with neither: %v\n%s", err, out)
	}
	// Once Gatehouse stops, the CLI opens the file itself.
	gh.stop()
	if out, err := ghCLI(t, "grants", "list", "--store", store, "--config", gh.config, "--adapter", "caddyfile"); err != nil || !strings.Contains(out, "(none)") {
		t.Errorf("with Gatehouse stopped: %v\n%s", err, out)
	}
}

// TestCLIUsersByEmailOnRedis: on Redis, a user who has only signed in
// (verified email, no grant, no request) is de-provisioned by email at
// once, on both nodes; one whose email the IdP did not verify is not
// named by it.
func TestCLIUsersByEmailOnRedis(t *testing.T) {
	e := startJIT(t)
	carol := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, carol.login(e.nodeA+"/work/1", "carol"), http.StatusOK)
	mustStatus(t, carol.fetch(http.MethodGet, e.nodeB+"/work/1"), http.StatusOK)
	res := e.cli(t, "users", "deprovision", "--user", "carol@example.com", "--reason", "e2e")
	var users []struct{ Iss, Sub string }
	if err := json.Unmarshal(res["users"], &users); err != nil || len(users) != 1 || users[0].Sub != "carol" || users[0].Iss != e.idp.Issuer {
		t.Fatalf("deprovision by email: %s", res["users"])
	}
	waitStatus(t, carol, e.nodeA+"/work/1", http.StatusUnauthorized, 2*time.Second)
	waitStatus(t, carol, e.nodeB+"/work/1", http.StatusUnauthorized, 2*time.Second)

	// bob's email is not verified by the IdP: it names nobody.
	bob := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, bob.login(e.nodeA+"/work/1", "bob"), http.StatusForbidden)
	out, err := ghCLI(t, "users", "logout", "--store", e.store, "--user", "bob@contractor.example")
	if err == nil || !strings.Contains(out, "no user with the email bob@contractor.example") {
		t.Errorf("an unverified email: %v\n%s", err, out)
	}
}

// TestCLINameAndVersion: the binary names itself gatehouse, says the
// Gatehouse and Caddy versions, and the gatehouse command's help shows
// how it is called from this binary.
func TestCLINameAndVersion(t *testing.T) {
	gomod, _ := os.ReadFile("../go.mod")
	caddyVersion := regexp.MustCompile(`github.com/caddyserver/caddy/v2 (v[0-9.]+)`).FindStringSubmatch(string(gomod))
	if caddyVersion == nil {
		t.Fatal("no Caddy version in go.mod")
	}
	out, err := exec.Command(gatehouseBin, "version").CombinedOutput()
	if err != nil || !regexp.MustCompile(`^Gatehouse \S.* on Caddy `+regexp.QuoteMeta(caddyVersion[1])+` `).Match(out) {
		t.Errorf("version: %v\n%s", err, out)
	}
	out, err = exec.Command(gatehouseBin, "help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "gatehouse [command]") || !strings.Contains(string(out), "gatehouse gatehouse --help") {
		t.Errorf("help: %v\n%s", err, out)
	}
	out, err = exec.Command(gatehouseBin, "gatehouse", "--help").CombinedOutput()
	bin := filepath.Base(gatehouseBin)
	if err != nil || !strings.Contains(string(out), bin+" gatehouse policy check DIR") || strings.Contains(string(out), "caddy gatehouse policy") {
		t.Errorf("gatehouse --help (run as %s): %v\n%s", bin, err, out)
	}
}

// TestCLIPolicyCheckAndEval: `policy check` through the binary, on the
// library and on a policy with a typo; `policy eval` refuses a real
// audit line written with decision_log minimal.
func TestCLIPolicyCheckAndEval(t *testing.T) {
	out, err := ghCLI(t, "policy", "check", "../policies")
	if err != nil || !strings.HasPrefix(out, "OK ../policies: revision ") {
		t.Errorf("policy check of the library: %v\n%s", err, out)
	}
	bad := t.TempDir()
	_ = os.WriteFile(filepath.Join(bad, "p.rego"), []byte("package gatehouse\n\ndefault decision := false\n\ndecision if \"admins\" in input.usr.groups\n"), 0o600)
	out, err = ghCLI(t, "policy", "check", bad)
	if err == nil || !strings.Contains(out, "p.rego:5: rego_type_error: undefined ref: input.usr.groups") {
		t.Errorf("policy check of input.usr: %v\n%s", err, out)
	}

	gh, site, _, _ := startEmbedded(t, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	dave := newBrowser(t, gh)
	mustStatus(t, dave.login(site+"/work/1", "dave"), http.StatusForbidden)
	gh.waitAudit(t, auditLine("user", "dave", "result", "deny"))
	var line string
	for _, l := range strings.Split(gh.log.String(), "\n") {
		if strings.Contains(l, `"user":"dave"`) && strings.Contains(l, `"result":"deny"`) {
			line = l
		}
	}
	in := filepath.Join(t.TempDir(), "line.json")
	_ = os.WriteFile(in, []byte(line), 0o600)
	out, err = ghCLI(t, "policy", "eval", "--policy", "../policies", "--input", in)
	if err == nil || !strings.Contains(out, "decision_log minimal") || !strings.Contains(out, "set decision_log full") {
		t.Errorf("policy eval of a minimal audit line: %v\n%s\n(line %s)", err, out, line)
	}
}
