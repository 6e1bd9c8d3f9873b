package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// policyData is the entitlements data the e2e policy serves; contractors
// are external (grant only) unless standing is set.
func policyData(contractorsStanding bool) string {
	external := `["contractors", "partners"]`
	access := `[{"groups": ["staff"], "paths": ["*"]}]`
	if contractorsStanding {
		external = `["partners"]`
		access = `[{"groups": ["staff"], "paths": ["*"]}, {"groups": ["contractors"], "paths": ["/", "/reports/*"]}]`
	}
	return fmt.Sprintf(`{"apps": {"e2e": {
		"external_groups": %s,
		"access": %s,
		"resources": {"e2e-app": {"paths": ["*"], "max_duration": "8h", "requestable_by": ["contractors", "partners"],
			"approver_groups": ["managers"], "auto_approve_groups": [], "auto_approve_max": "0s"}},
		"sensitive": [],
		"headers": {"X-Legacy-Role": [{"group": "managers", "value": "manager"}, {"group": "staff", "value": "staff"}]}
	}}}`, external, access)
}

// writeAtomically replaces a file by rename, as deploy tools do.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestPolicy(t *testing.T) {
	// The shipped library's rules, with e2e data.
	dir := t.TempDir()
	for _, f := range []string{"decision.rego", "approval.rego"} {
		b, err := os.ReadFile(filepath.Join("..", "policies", "gatehouse", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "gatehouse"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeAtomically(t, filepath.Join(dir, "gatehouse", f), string(b))
	}
	dataPath := filepath.Join(dir, "entitlements", "data.json")
	_ = os.MkdirAll(filepath.Dir(dataPath), 0o755)
	writeAtomically(t, dataPath, policyData(false))

	base := fmt.Sprintf("https://localhost:%d", freePort(t))
	p := startIdP(t, idpClient{ClientID: "pol", ClientSecret: "pol-secret",
		RedirectURIs: []string{base + "/.gatehouse/callback"}, PostLogoutRedirectURIs: []string{base + "/.gatehouse/logout"}})
	up := startUpstream(t)
	gh := startGatehouse(t, fmt.Sprintf(`%s {
	gatehouse {
		app e2e
		issuer %s
		client_id pol
		client_secret pol-secret
		scopes openid email profile groups
		cookie_secret %s
		identity_header X-Remote-User email
		policy %s
		policy_headers X-Legacy-Role
		decision_log full
	}
	reverse_proxy %s
}
`, base, p.Issuer, randomSecret(t), dir, up.Listener.Addr()), nil, base)

	alice, carol, bob := newBrowser(t, gh), newBrowser(t, gh), newBrowser(t, gh)
	pa := alice.login(base+"/reports/1", "alice")
	mustStatus(t, pa, http.StatusOK)
	if v := pa.echo(t).Headers["X-Legacy-Role"]; len(v) != 1 || v[0] != "staff" {
		t.Errorf("alice's X-Legacy-Role = %q", v)
	}
	if v := carol.login(base+"/", "carol").echo(t).Headers["X-Legacy-Role"]; len(v) != 1 || v[0] != "manager" {
		t.Errorf("carol's X-Legacy-Role = %q", v)
	}
	// A client cannot set a policy header.
	req, _ := http.NewRequest(http.MethodGet, base+"/x", nil)
	setNavigation(req)
	req.Header.Set("x_legacy_role", "manager")
	if v := alice.do(req).echo(t).Headers; len(v["X-Legacy-Role"]) != 1 || v["X-Legacy-Role"][0] != "staff" || v["X_legacy_role"] != nil {
		t.Errorf("spoofed policy header reached the upstream: %v", v)
	}

	pb := bob.login(base+"/reports/1", "bob")
	mustStatus(t, pb, http.StatusForbidden)
	if !strings.Contains(pb.Body, "You need temporary access to e2e-app. Ask for it here.") {
		t.Errorf("bob's deny page does not say, in plain words, what he can do:\n%s", pb.Body)
	}
	var first string
	if l := gh.waitAudit(t, func(l map[string]any) bool { return l["user"] == "bob" && l["result"] == "deny" }); l != nil {
		first, _ = l["policy_revision"].(string)
		in, _ := json.Marshal(l["input"])
		if !strings.Contains(string(in), `"groups":["contractors"]`) || strings.Contains(strings.ToLower(string(in)), "cookie") {
			t.Errorf("logged input: %s", in)
		}
	}
	if first == "" {
		t.Fatal("no audit line with a policy revision for bob's deny")
	}

	// That production decision replays offline, with the same answer.
	var line string
	for _, l := range strings.Split(gh.log.String(), "\n") {
		if strings.Contains(l, `"user":"bob"`) && strings.Contains(l, `"result":"deny"`) {
			line = l
		}
	}
	linePath := filepath.Join(t.TempDir(), "line.json")
	_ = os.WriteFile(linePath, []byte(line), 0o600)
	out, err := exec.Command(gatehouseBin, "gatehouse", "policy", "eval", "--policy", dir, "--input", linePath, "--format", "json").CombinedOutput()
	var replay struct {
		Revision string
		Value    map[string]any
	}
	if err != nil || json.Unmarshal(out, &replay) != nil || replay.Revision != first || replay.Value["allow"] != false ||
		replay.Value["reason"] != "e2e-app needs a temporary grant" {
		t.Fatalf("offline replay: %v\n%s", err, out)
	}

	// A valid change on disk is served without a restart.
	changed := time.Now()
	writeAtomically(t, dataPath, policyData(true))
	if !eventually(5*time.Second, func() bool { return bob.fetch(http.MethodGet, base+"/reports/1").StatusCode == http.StatusOK }) {
		t.Fatalf("the policy change was not served within 5s")
	}
	took := time.Since(changed)
	t.Logf("policy change served %s after the write", took.Round(time.Millisecond))

	// An invalid change is refused and the last good revision keeps serving.
	writeAtomically(t, filepath.Join(dir, "gatehouse", "decision.rego"), "package gatehouse\n\ndecision := {\n")
	if !eventually(5*time.Second, func() bool { return strings.Contains(gh.log.String(), "policy change refused") }) {
		t.Fatal("no log line refused the invalid change")
	}
	for _, b := range []*browser{alice, bob} {
		if p := b.fetch(http.MethodGet, base+"/reports/1"); p.StatusCode != http.StatusOK {
			t.Errorf("after an invalid change: %d %s", p.StatusCode, p.Body)
		}
	}
	if p := bob.fetch(http.MethodGet, base+"/admin"); p.StatusCode != http.StatusForbidden {
		t.Errorf("the last good revision does not deny what it should: %d", p.StatusCode)
	}

	// A Caddy config reload keeps the engine (and its watch) working.
	writeAtomically(t, filepath.Join(dir, "gatehouse", "decision.rego"), mustRead(t, filepath.Join("..", "policies", "gatehouse", "decision.rego")))
	gh.reload(t)
	if p := bob.fetch(http.MethodGet, base+"/reports/1"); p.StatusCode != http.StatusOK {
		t.Errorf("after a config reload: %d %s", p.StatusCode, p.Body)
	}
	writeAtomically(t, dataPath, policyData(false))
	if !eventually(5*time.Second, func() bool { return bob.fetch(http.MethodGet, base+"/reports/1").StatusCode == http.StatusForbidden }) {
		t.Fatal("after a config reload, a policy change on disk was not served within 5s")
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
