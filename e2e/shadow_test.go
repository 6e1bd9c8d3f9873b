package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// libraryPolicy writes the shipped library's rules with data to a new
// directory and returns it and its data file.
func libraryPolicy(t *testing.T, data string) (dir, dataPath string) {
	t.Helper()
	dir = t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "gatehouse"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"decision.rego", "approval.rego"} {
		writeAtomically(t, filepath.Join(dir, "gatehouse", f), mustRead(t, filepath.Join("..", "policies", "gatehouse", f)))
	}
	dataPath = filepath.Join(dir, "entitlements", "data.json")
	if err := os.MkdirAll(filepath.Dir(dataPath), 0o755); err != nil {
		t.Fatal(err)
	}
	writeAtomically(t, dataPath, data)
	return dir, dataPath
}

// TestPolicyShadow: a node serves the library with staff access to every
// path, and tries a candidate that limits staff to / and /reports/*.
// Requests keep the serving decision; each one the candidate would deny
// is an event line and a count; `policy diff` on the node's own audit
// log reports exactly those decisions; and a change of the candidate on
// disk is tried at once.
func TestPolicyShadow(t *testing.T) {
	serving, _ := libraryPolicy(t, policyData(false))
	candidateData := strings.Replace(policyData(false), `"paths": ["*"]}]`, `"paths": ["/", "/reports/*"]}]`, 1)
	if candidateData == policyData(false) {
		t.Fatal("the candidate's data did not change")
	}
	candidate, candidateDataPath := libraryPolicy(t, candidateData)

	base := fmt.Sprintf("https://localhost:%d", freePort(t))
	p := startIdP(t, idpClient{ClientID: "shadow", ClientSecret: "shadow-secret",
		RedirectURIs: []string{base + "/.gatehouse/callback"}, PostLogoutRedirectURIs: []string{base + "/.gatehouse/logout"}})
	up := startUpstream(t)
	gh := startGatehouse(t, fmt.Sprintf(`%s {
	gatehouse {
		app e2e
		issuer %s
		client_id shadow
		client_secret shadow-secret
		scopes openid email profile groups
		cookie_secret %s
		policy %s
		policy_shadow %s
		policy_headers X-Legacy-Role
		decision_log full
	}
	reverse_proxy %s
}
`, base, p.Issuer, randomSecret(t), serving, candidate, up.Listener.Addr()), nil, base)

	alice, bob := newBrowser(t, gh), newBrowser(t, gh)
	mustStatus(t, alice.login(base+"/reports/1", "alice"), http.StatusOK)
	for _, path := range []string{"/admin/users", "/admin/export", "/reports/2"} {
		// The serving policy decides: alice is staff, staff may go anywhere.
		if pg := alice.fetch(http.MethodGet, base+path); pg.StatusCode != http.StatusOK {
			t.Errorf("alice %s: %d, want the serving policy's allow", path, pg.StatusCode)
		}
	}
	mustStatus(t, bob.login(base+"/reports/1", "bob"), http.StatusForbidden) // a contractor: both deny

	// Every decision the policy made is tried by the candidate.
	decided := func() []map[string]any {
		var out []map[string]any
		for _, l := range gh.auditLines() {
			if l["msg"] == "decision" && l["policy_revision"] != nil {
				out = append(out, l)
			}
		}
		return out
	}
	if !eventually(auditWait, func() bool { return len(decided()) == 5 }) {
		t.Fatalf("%d decisions by the policy, want 5", len(decided()))
	}
	if !eventually(5*time.Second, func() bool {
		return scrape(t, gh).value(`gatehouse_policy_shadow_evaluations_total{app="e2e"}`) == 5
	}) {
		t.Fatalf("the candidate did not decide the 5 requests:\n%s", scrape(t, gh).excerpt("gatehouse_policy_shadow_evaluations_total"))
	}
	m := scrape(t, gh)
	if m.value(`gatehouse_policy_shadow_disagreements_total{app="e2e",change="allow_to_deny"}`) != 2 ||
		m.sum("gatehouse_policy_shadow_disagreements_total", "") != 2 || m.value(`gatehouse_policy_shadow_dropped_total{app="e2e"}`) != 0 {
		t.Errorf("shadow metrics:\n%s", m.excerpt("gatehouse_policy_shadow_disagreements_total", "gatehouse_policy_shadow_dropped_total"))
	}

	// One event line per disagreement, naming the decision line of its
	// request, which kept the serving decision.
	var shadowIDs []string
	for _, ev := range gh.auditLines() {
		if ev["msg"] != "policy shadow disagreed" {
			continue
		}
		id, _ := ev["decision_id"].(string)
		shadowIDs = append(shadowIDs, id)
		dl := findAudit(auditLine("msg", "decision", "decision_id", id), gh)
		if dl == nil || dl["result"] != "allow" || ev["app"] != "e2e" || ev["user"] != dl["user"] || ev["path"] != dl["path"] ||
			!strings.HasPrefix(dl["path"].(string), "/admin/") || ev["serving_result"] != "allow" || ev["candidate_result"] != "deny" ||
			ev["candidate_reason"] != "your groups give no access to this page" || ev["serving_revision"] != dl["policy_revision"] ||
			ev["candidate_revision"] == ev["serving_revision"] || fmt.Sprint(ev["changes"]) != "[allow_to_deny]" {
			t.Errorf("event %v\nfor the decision %v", ev, dl)
		}
	}
	slices.Sort(shadowIDs)
	if len(shadowIDs) != 2 {
		t.Fatalf("%d disagreement events, want 2 (alice's /admin requests)", len(shadowIDs))
	}

	// policy diff, through the binary, on the node's own audit log: the
	// same two decisions, whether compared with the log or with the
	// serving policy deciding them again.
	var audit strings.Builder
	for _, line := range strings.Split(gh.log.String(), "\n") {
		if strings.Contains(line, `"logger":"http.handlers.gatehouse.audit"`) {
			audit.WriteString(line + "\n")
		}
	}
	logPath := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(logPath, []byte(audit.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{}, {"--policy", serving}} {
		cmd := exec.Command(gatehouseBin, append([]string{"gatehouse", "policy", "diff", "--candidate", candidate, "--log", logPath, "--format", "json"}, args...)...)
		out, err := cmd.Output()
		var rep struct {
			Lines   map[string]int
			Changes map[string]int
			Groups  []struct {
				Change, App, Rule string
				Count             int
				Examples          []struct {
					DecisionID string `json:"decision_id"`
				}
			}
		}
		if err != nil || json.Unmarshal(out, &rep) != nil {
			t.Fatalf("policy diff %v: %v\n%s", args, err, out)
		}
		var ids []string
		for _, g := range rep.Groups {
			for _, e := range g.Examples {
				ids = append(ids, e.DecisionID)
			}
		}
		slices.Sort(ids)
		if rep.Lines["replayed"] != 5 || rep.Lines["changed"] != 2 || len(rep.Changes) != 1 || rep.Changes["allow_to_deny"] != 2 ||
			len(rep.Groups) != 1 || rep.Groups[0].App != "e2e" || rep.Groups[0].Count != 2 ||
			!strings.HasPrefix(rep.Groups[0].Rule, "data.gatehouse.decision at gatehouse/decision.rego:") || !slices.Equal(ids, shadowIDs) {
			t.Errorf("policy diff %v reports %s\nwant the shadow's decisions %v", args, out, shadowIDs)
		}
	}
	text, err := exec.Command(gatehouseBin, "gatehouse", "policy", "diff", "--candidate", candidate, "--log", logPath).Output()
	if err != nil || !strings.Contains(string(text), "allow_to_deny  app e2e  2 decisions") {
		t.Errorf("policy diff (text): %v\n%s", err, text)
	}
	t.Logf("policy diff:\n%s", text)

	// The candidate is watched: made equal to the serving policy, it
	// agrees from then on.
	writeAtomically(t, candidateDataPath, policyData(false))
	servingRev := decided()[0]["policy_revision"]
	if !eventually(5*time.Second, func() bool {
		return scrape(t, gh).has(fmt.Sprintf(`gatehouse_policy_shadow_revision_info{policy=%q,revision=%q} 1`, candidate, servingRev))
	}) {
		t.Fatalf("the candidate's change was not tried within 5s:\n%s", scrape(t, gh).excerpt("gatehouse_policy_shadow_revision_info"))
	}
	mustStatus(t, alice.fetch(http.MethodGet, base+"/admin/users"), http.StatusOK)
	if !eventually(5*time.Second, func() bool {
		return scrape(t, gh).value(`gatehouse_policy_shadow_evaluations_total{app="e2e"}`) == 6
	}) {
		t.Fatal("the candidate did not decide the request after its change")
	}
	if n := scrape(t, gh).sum("gatehouse_policy_shadow_disagreements_total", ""); n != 2 {
		t.Errorf("after the candidate became the serving policy, %v disagreements, want still 2", n)
	}
}
