package e2e

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

// jitEnv is two Gatehouse nodes running caddyfile-examples/contractor-jit.Caddyfile
// with the shipped policies, sharing one Redis.
type jitEnv struct {
	idp          *idp
	redis        *redistest.Server // when the store is one server
	store        string            // the store's URL, for the CLI
	proxy        *slowProxy
	nodeA, nodeB string
	ghA, ghB     *gatehouse
}

func startJIT(t *testing.T) *jitEnv { return startJITWith(t, "", "", "") }

// startJITWith starts the two nodes with extra gatehouse lines, a grants
// URL other than the Redis (a proxy in front of it), and a policy
// directory other than the repository's.
func startJITWith(t *testing.T, extra, grantsURL, policyDir string) *jitEnv {
	return startJITWithRedis(t, startRedis(t), extra, grantsURL, policyDir)
}

func startJITWithRedis(t *testing.T, r *redistest.Server, extra, grantsURL, policyDir string) *jitEnv {
	return startJITWithStore(t, r, r.URL(), extra, grantsURL, policyDir)
}

// startJITWithStore starts the two nodes on the store at store (for the
// CLI; grantsURL, when set, is what the nodes use instead).
func startJITWithStore(t *testing.T, r *redistest.Server, store, extra, grantsURL, policyDir string) *jitEnv {
	e := &jitEnv{redis: r, store: store}
	e.nodeA = fmt.Sprintf("https://localhost:%d", freePort(t))
	e.nodeB = fmt.Sprintf("https://localhost:%d", freePort(t))
	e.idp = startIdP(t, idpClient{ClientID: "jit", ClientSecret: "jit-secret",
		RedirectURIs:           []string{e.nodeA + "/.gatehouse/callback", e.nodeB + "/.gatehouse/callback"},
		PostLogoutRedirectURIs: []string{e.nodeA + "/.gatehouse/logout", e.nodeB + "/.gatehouse/logout"}})
	up := startUpstream(t)
	example, err := os.ReadFile("../caddyfile-examples/contractor-jit.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	config := string(example)
	// The nodes run the example as is, but for the policy's time bound:
	// 100 ms of evaluation is plenty on a quiet machine and not on two
	// cores shared with other builds, where a starved evaluation denies
	// (policy_error). No e2e test is about that bound (policies' own
	// tests are).
	config = strings.Replace(config, "\t\tpolicy {env.GATEHOUSE_POLICY}\n", "\t\tpolicy {env.GATEHOUSE_POLICY}\n\t\tpolicy_timeout 5s\n", 1)
	if extra != "" {
		if strings.Contains(extra, "grants_timeout") {
			config = strings.Replace(config, "\t\tgrants_timeout 50ms\n", "", 1)
		}
		config = strings.Replace(config, "\t\tapp projects\n", "\t\tapp projects\n\t\t"+extra+"\n", 1)
	}
	policy, _ := filepath.Abs("../policies")
	if policyDir != "" {
		policy = policyDir
	}
	if grantsURL == "" {
		grantsURL = store
	}
	secret := randomSecret(t)
	env := func(site string) []string {
		return []string{"GATEHOUSE_SITE=" + site, "GATEHOUSE_ISSUER=" + e.idp.Issuer, "GATEHOUSE_CLIENT_ID=jit",
			"GATEHOUSE_CLIENT_SECRET=jit-secret", "GATEHOUSE_COOKIE_SECRET=" + secret, "GATEHOUSE_GRANTS=" + grantsURL,
			"GATEHOUSE_POLICY=" + policy, "GATEHOUSE_UPSTREAM=" + up.Listener.Addr().String()}
	}
	e.ghA = startGatehouse(t, config, env(e.nodeA), e.nodeA)
	e.ghB = startGatehouse(t, config, env(e.nodeB), e.nodeB)
	return e
}

// cli runs the ops CLI against the shared store and decodes its JSON.
func (e *jitEnv) cli(t *testing.T, args ...string) map[string]json.RawMessage {
	t.Helper()
	args = append(append([]string{"gatehouse"}, args...), "--store", e.store, "--json", "--by", "e2e-ops")
	out, err := exec.Command(gatehouseBin, args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("gatehouse %v: %v\n%s%s", args, err, out, stderr)
	}
	var res map[string]json.RawMessage
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("gatehouse %v: %s", args, out)
	}
	return res
}

type cliGrant struct {
	ID        string
	Resource  string
	ExpiresAt int64 `json:"expires_at"`
	RevokedAt int64 `json:"revoked_at"`
	User      struct{ Sub string }
}

type cliRequest struct {
	ID       string
	Resource string
	Status   string
	User     struct{ Sub string }
}

func (e *jitEnv) grants(t *testing.T, args ...string) []cliGrant {
	var gs []cliGrant
	_ = json.Unmarshal(e.cli(t, append([]string{"grants", "list"}, args...)...)["grants"], &gs)
	return gs
}

// evidence is the CLI's evidence export of the projects app's last day,
// in format (csv or json).
func (e *jitEnv) evidence(t *testing.T, format string) string {
	t.Helper()
	out, err := exec.Command(gatehouseBin, "gatehouse", "evidence", "export", "--store", e.store, "--app", "projects",
		"--since", "1d", "--format", format).Output()
	if err != nil {
		t.Fatalf("evidence export: %v\n%s", err, out)
	}
	return string(out)
}

// evidenceRows is the evidence export as JSON rows.
func (e *jitEnv) evidenceRows(t *testing.T) []map[string]any {
	t.Helper()
	var rows []map[string]any
	if err := json.Unmarshal([]byte(e.evidence(t, "json")), &rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

func (e *jitEnv) requests(t *testing.T, args ...string) []cliRequest {
	var rs []cliRequest
	_ = json.Unmarshal(e.cli(t, append([]string{"requests", "list"}, args...)...)["requests"], &rs)
	return rs
}

// form reads the hidden inputs of the first form on a page.
func form(p page) url.Values {
	v := url.Values{}
	for _, h := range hiddenInputRE.FindAllStringSubmatch(p.Body, -1) {
		v.Set(h[1], h[2])
	}
	return v
}

// post submits a form without following redirects.
func (b *browser) post(target string, v url.Values, hdr map[string]string) *http.Response {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	setNavigation(req)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for k, val := range hdr {
		req.Header.Set(k, val)
	}
	resp, err := b.noRedirects().Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// waitStatus polls a URL with a background request until it answers want,
// and returns how long that took.
func waitStatus(t *testing.T, b *browser, target string, want int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var p page
	if !eventually(within, func() bool { p = b.fetch(http.MethodGet, target); return p.StatusCode == want }) {
		t.Fatalf("%s: still %d after %s, want %d\n%s", target, p.StatusCode, within, want, p.Body)
	}
	return time.Since(start)
}

var requestIDRE = regexp.MustCompile(`name="request" value="([a-z2-7]+)"`)

// grantsEnv is what TestGrants' subtests share: the two nodes, bob (a
// contractor, signed in and denied at the start, with the request form
// of his deny page), and what some subtests leave for later ones.
type grantsEnv struct {
	*jitEnv
	bob   *browser
	offer url.Values // the hidden fields of bob's deny page on /work/1

	requested        bool      // set by grantsRequest: bob's 4s request is pending
	alice            *browser  // set by grantsApproval: alice, stepped up on node B
	approvedAt       time.Time // set by grantsApproval: when bob's request was approved
	bobDeprovisioned bool      // set by grantsRevocation: bob is de-provisioned
}

// needs skips a subtest when the earlier subtests it builds on did not
// leave what it needs (one failed, or -run left it out); the message says
// how to run them together.
func needs(t *testing.T, ok bool, earlier ...string) {
	t.Helper()
	if ok {
		return
	}
	slash := strings.LastIndex(t.Name(), "/")
	var names []string
	for _, n := range append(earlier, t.Name()[slash+1:]) {
		names = append(names, runName(n))
	}
	t.Skipf("needs the state left by the earlier subtests %q: run them together, e.g. -run '%s/(%s)'",
		earlier, t.Name()[:slash], strings.Join(names, "|"))
}

// runName is a regular expression for a subtest name: its first three
// words as go test spells them (spaces as underscores).
func runName(name string) string {
	words := strings.Fields(strings.ReplaceAll(name, "_", " "))
	return regexp.QuoteMeta(strings.Join(words[:min(3, len(words))], "_"))
}

// TestGrants runs the contractor-jit example on two nodes: a contractor
// asks for access, an approver grants it, the grant reaches both nodes and
// ends; auto-approval, rejection, self-approval, revocation,
// de-provisioning, a replayed cookie and a Redis outage.
//
// The subtests share the nodes and bob, and run in this order; the order
// matters ("forged ..." checks that no request exists yet, "trusted ..."
// that erin's is the only one pending, "Redis down ..." stops Redis).
// Most run alone (-run 'TestGrants/<name>'). Three build on earlier ones,
// say so in their comment, and skip, naming them, when those did not run
// or failed:
//   - "an approver steps up and approves it once" needs "a request is made
//     once and shows on both nodes" (bob's pending request);
//   - "the grant opens both nodes and ends after 4s on both" and "trusted
//     contractors are approved at once; a rejection is final" need both of
//     those (the approval time; alice, stepped up);
//   - "Redis down: ..." needs "revocation and de-provisioning reach the
//     other node within 2s" (bob de-provisioned).
//
// For example: go test -run 'TestGrants/(a_request_is|an_approver_steps|the_grant_opens)'.
func TestGrants(t *testing.T) {
	e := startGrants(t)
	for _, c := range []struct {
		name string
		run  func(t *testing.T, e *grantsEnv)
	}{
		{"forged and hostile requests are refused", grantsForgedRequests},
		{"a request is made once and shows on both nodes", grantsRequest},
		{"an approver steps up and approves it once", grantsApproval},
		{"the grant opens both nodes and ends after 4s on both", grantsUseAndExpiry},
		{"trusted contractors are approved at once; a rejection is final", grantsAutoApprovalAndRejection},
		{"the requester cannot approve their own request", grantsNoSelfApproval},
		{"revocation and de-provisioning reach the other node within 2s", grantsRevocation},
		{"a cookie replayed after logout is refused", grantsLogoutReplay},
		{"the evidence export shows who had what, who approved it and when", grantsEvidence},
		{"Redis down: standing access works, JIT access 503, revocations hold, nothing hangs", grantsRedisDown},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, e) })
	}
}

// startGrants starts the two nodes; bob, a contractor, is denied, and
// offered a request form.
func startGrants(t *testing.T) *grantsEnv {
	e := &grantsEnv{jitEnv: startJIT(t)}
	e.bob = newBrowser(t, e.ghA, e.ghB)
	p := e.bob.login(e.nodeA+"/work/1", "bob")
	mustStatus(t, p, http.StatusForbidden)
	if !strings.Contains(p.Body, "You need temporary access to projects-app") || !strings.Contains(p.Body, `action="/.gatehouse/request"`) {
		t.Fatalf("no request form on the deny page:\n%s", p.Body)
	}
	e.offer = form(p)
	if e.offer.Get("csrf") == "" || e.offer.Get("offer") == "" {
		t.Fatalf("form fields: %v", e.offer)
	}
	return e
}

// grantsForgedRequests: requests without a valid token, from another
// site, with a tampered or missing offer, a bad duration or no reason, or
// with another user's offer are refused and make no request. It checks
// that there is no request at all, so it runs before grantsRequest.
func grantsForgedRequests(t *testing.T, e *grantsEnv) {
	A, bob, offer := e.nodeA, e.bob, e.offer
	good := func() url.Values {
		v := url.Values{"csrf": {offer.Get("csrf")}, "offer": {offer.Get("offer")}, "reason": {"x"}, "duration": {"1h"}}
		return v
	}
	cases := []struct {
		name   string
		change func(v url.Values)
		hdr    map[string]string
		want   int
	}{
		{"no CSRF token", func(v url.Values) { v.Del("csrf") }, nil, 403},
		{"another token", func(v url.Values) { v.Set("csrf", "AAAA") }, nil, 403},
		{"cross-site", nil, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"foreign origin", nil, map[string]string{"Origin": "https://evil.example"}, 403},
		{"tampered offer", func(v url.Values) { v.Set("offer", offer.Get("offer")[:20]+"x"+offer.Get("offer")[21:]) }, nil, 403},
		{"no offer", func(v url.Values) { v.Del("offer") }, nil, 403},
		{"over the cap", func(v url.Values) { v.Set("duration", "9h") }, nil, 400},
		{"negative", func(v url.Values) { v.Set("duration", "-1h") }, nil, 400},
		{"huge", func(v url.Values) { v.Set("duration", "9999999999h") }, nil, 400},
		{"no reason", func(v url.Values) { v.Set("reason", " ") }, nil, 400},
	}
	for _, c := range cases {
		v := good()
		if c.change != nil {
			c.change(v)
		}
		if resp := bob.post(A+"/.gatehouse/request", v, c.hdr); resp.StatusCode != c.want {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.want)
		}
	}
	// carol's offer (for admin) cannot be used by bob.
	carol := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, carol.login(A+"/", "carol"), http.StatusOK)
	cp := carol.navigate(A + "/admin/")
	if cp.StatusCode != http.StatusForbidden {
		t.Fatalf("carol on /admin/: %d", cp.StatusCode)
	}
	v := good()
	v.Set("offer", form(cp).Get("offer"))
	if resp := bob.post(A+"/.gatehouse/request", v, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob posting carol's offer: %d", resp.StatusCode)
	}
	if n := len(e.requests(t)); n != 0 {
		t.Fatalf("%d requests were created by refused posts", n)
	}
}

// grantsRequest: bob asks for 4 seconds; a resubmission makes no second
// request, and his access page on the other node shows it pending.
func grantsRequest(t *testing.T, e *grantsEnv) {
	A, B, bob, offer := e.nodeA, e.nodeB, e.bob, e.offer
	v := url.Values{"csrf": {offer.Get("csrf")}, "offer": {offer.Get("offer")}, "reason": {"sprint 42"}, "duration": {"4s"}}
	for range 2 {
		if resp := bob.post(A+"/.gatehouse/request", v, nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/.gatehouse/access?notice=requested" {
			t.Fatalf("request: %d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if rs := e.requests(t, "--status", "pending"); len(rs) != 1 || rs[0].User.Sub != "bob" {
		t.Fatalf("pending requests: %+v", rs)
	}
	e.requested = true
	if p := bob.navigate(B + "/.gatehouse/access"); !strings.Contains(p.Body, "projects-app") || !strings.Contains(p.Body, "pending") {
		t.Errorf("my access on the other node does not show the pending request:\n%s", p.Body)
	}
}

// grantsApproval: alice approves bob's request on node B, after stepping
// up; an approval without a CSRF token is refused and a replayed one finds
// the request decided; one grant results. Needs grantsRequest (bob's
// pending request); leaves alice, stepped up, and the approval time.
func grantsApproval(t *testing.T, e *grantsEnv) {
	needs(t, e.requested, "a request is made once and shows on both nodes")
	B := e.nodeB
	alice := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, alice.login(B+"/", "alice"), http.StatusOK)
	ap := alice.navigate(B + "/.gatehouse/approvals")
	if !isLoginForm(ap) || !strings.Contains(ap.Body, `name="otp"`) {
		t.Fatalf("approvals without a step-up:\n%s", fmtHops(alice.hops))
	}
	ap = alice.submitLoginOTP(ap, "alice", "111111")
	mustStatus(t, ap, http.StatusOK)
	m := requestIDRE.FindStringSubmatch(ap.Body)
	if m == nil || !strings.Contains(ap.Body, "sprint 42") {
		t.Fatalf("bob's request is not on the approvals page:\n%s", ap.Body)
	}
	approve := url.Values{"csrf": {form(ap).Get("csrf")}, "request": {m[1]}, "action": {"approve"}, "note": {"ok"}}
	if resp := alice.post(B+"/.gatehouse/approvals", url.Values{"request": {m[1]}, "action": {"approve"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("an approval without a CSRF token: %d", resp.StatusCode)
	}
	resp := alice.post(B+"/.gatehouse/approvals", approve, nil)
	approvedAt := time.Now()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/.gatehouse/approvals?notice=approved" {
		t.Fatalf("approve: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := alice.post(B+"/.gatehouse/approvals", approve, nil); resp.Header.Get("Location") != "/.gatehouse/approvals?notice=already_decided" {
		t.Errorf("a replayed approval: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if gs := e.grants(t, "--all"); len(gs) != 1 || gs[0].User.Sub != "bob" || gs[0].Resource != "projects-app" {
		t.Fatalf("grants after approving (and replaying): %+v", gs)
	}
	e.alice, e.approvedAt = alice, approvedAt
}

// grantsUseAndExpiry: bob gets in on both nodes; the 4s grant ends on
// both, and its expiry is audited. Needs grantsApproval (the approval
// time).
func grantsUseAndExpiry(t *testing.T, e *grantsEnv) {
	needs(t, !e.approvedAt.IsZero(), "a request is made once and shows on both nodes", "an approver steps up and approves it once")
	A, B, bob := e.nodeA, e.nodeB, e.bob
	tA := waitStatus(t, bob, A+"/work/1", http.StatusOK, 2*time.Second)
	tB := waitStatus(t, bob, B+"/work/1", http.StatusOK, 2*time.Second)
	t.Logf("after the approval on node B: bob in on node A after %s, node B after %s", tA.Round(time.Millisecond), tB.Round(time.Millisecond))
	if p := bob.navigate(A + "/.gatehouse/access"); !strings.Contains(p.Body, "projects-app") || !strings.Contains(p.Body, "left") {
		t.Errorf("my access does not show the grant:\n%s", p.Body)
	}
	time.Sleep(time.Until(e.approvedAt.Add(4 * time.Second)))
	waitStatus(t, bob, A+"/work/1", http.StatusForbidden, 2*time.Second)
	waitStatus(t, bob, B+"/work/1", http.StatusForbidden, 2*time.Second)
	if findAudit(auditLine("msg", "grant expired", "user", "bob"), e.ghA, e.ghB) == nil {
		t.Error("no audit line for the grant that expired on use")
	}
}

// grantsAutoApprovalAndRejection: erin (a trusted contractor) is approved
// at once; her request beyond the auto-approval cap is rejected by alice,
// and stays refused. Needs grantsApproval (alice, stepped up, and bob's
// request decided, so erin's is the only one pending).
func grantsAutoApprovalAndRejection(t *testing.T, e *grantsEnv) {
	needs(t, e.alice != nil, "a request is made once and shows on both nodes", "an approver steps up and approves it once")
	A, B, alice := e.nodeA, e.nodeB, e.alice
	erin := newBrowser(t, e.ghA, e.ghB)
	p := erin.login(A+"/work/7", "erin")
	v := form(p)
	v.Set("reason", "hotfix")
	v.Set("duration", "1h")
	resp := erin.post(A+"/.gatehouse/request", v, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/work/7" {
		t.Fatalf("auto-approval: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	waitStatus(t, erin, B+"/work/7", http.StatusOK, 2*time.Second)
	if findAudit(auditLine("msg", "grant auto-approved", "user", "erin"), e.ghA, e.ghB) == nil {
		t.Error("no audit line for the auto-approval")
	}
	// erin asks for longer than auto-approval allows: alice rejects.
	e.cli(t, "grants", "revoke", "--id", e.grants(t, "--user", "erin@contractor.example")[0].ID)
	p = erin.navigate(A + "/work/8")
	v = form(p)
	v.Set("reason", "the whole week")
	v.Set("duration", "8h")
	if resp := erin.post(A+"/.gatehouse/request", v, nil); resp.Header.Get("Location") != "/.gatehouse/access?notice=requested" {
		t.Fatalf("an 8h request: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	var js struct {
		CSRF     string
		Requests []struct{ ID string }
	}
	alice.fetch(http.MethodGet, B+"/.gatehouse/approvals").json(t, &js)
	if len(js.Requests) != 1 {
		t.Fatalf("pending for alice: %+v", js)
	}
	if resp := alice.post(B+"/.gatehouse/approvals", url.Values{"csrf": {js.CSRF}, "request": {js.Requests[0].ID}, "action": {"reject"}, "note": {"too long"}}, nil); resp.Header.Get("Location") != "/.gatehouse/approvals?notice=rejected" {
		t.Fatalf("reject: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if p := erin.fetch(http.MethodGet, A+"/work/8"); p.StatusCode != http.StatusForbidden {
		t.Errorf("after a rejection: %d", p.StatusCode)
	}
	if findAudit(auditLine("msg", "grant rejected", "user", "erin"), e.ghA, e.ghB) == nil {
		t.Error("no audit line for the rejection")
	}
}

// grantsNoSelfApproval: carol, an approver, asks for admin; her own
// request is not on her approvals page, and approving it is refused and
// audited.
func grantsNoSelfApproval(t *testing.T, e *grantsEnv) {
	A := e.nodeA
	carol := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, carol.login(A+"/", "carol"), http.StatusOK)
	cp := carol.navigate(A + "/admin/")
	cv := form(cp)
	cv.Set("reason", "rotate keys")
	cv.Set("duration", "1h")
	if resp := carol.post(A+"/.gatehouse/request", cv, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("carol's request: %d", resp.StatusCode)
	}
	var id string
	for _, r := range e.requests(t, "--status", "pending") {
		if r.User.Sub == "carol" {
			id = r.ID
		}
	}
	page := carol.navigate(A + "/.gatehouse/approvals")
	page = carol.submitLoginOTP(page, "carol", "333333")
	if strings.Contains(page.Body, id) {
		t.Error("carol's own request is on her approvals page")
	}
	var js struct{ CSRF string }
	carol.fetch(http.MethodGet, A+"/.gatehouse/approvals").json(t, &js)
	resp := carol.post(A+"/.gatehouse/approvals", url.Values{"csrf": {js.CSRF}, "request": {id}, "action": {"approve"}}, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("carol approving her own request: %d", resp.StatusCode)
	}
	if findAudit(auditLine("msg", "approval refused", "user", "carol"), e.ghA, e.ghB) == nil {
		t.Error("no audit line for the refused self-approval")
	}
}

// grantsRevocation: a grant bob ends on node A is refused on node B
// within 2s; de-provisioning bob ends his sessions on both nodes within
// 2s and removes his grants. Leaves bob de-provisioned.
func grantsRevocation(t *testing.T, e *grantsEnv) {
	A, B, bob := e.nodeA, e.nodeB, e.bob
	e.cli(t, "grants", "add", "--sub", "bob", "--iss", e.idp.Issuer, "--user", "bob@contractor.example",
		"--resource", "projects-app", "--duration", "1h", "--reason", "e2e")
	waitStatus(t, bob, A+"/work/1", http.StatusOK, 2*time.Second)
	waitStatus(t, bob, B+"/work/1", http.StatusOK, 2*time.Second)
	// bob ends it on node A; node B follows.
	page := bob.navigate(A + "/.gatehouse/access")
	id := regexp.MustCompile(`name="grant" value="([a-z2-7]+)"`).FindStringSubmatch(page.Body)
	if id == nil {
		t.Fatalf("no grant on my access:\n%s", page.Body)
	}
	if resp := bob.post(A+"/.gatehouse/access", url.Values{"csrf": {form(page).Get("csrf")}, "grant": {id[1]}, "action": {"end"}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("end grant: %d", resp.StatusCode)
	}
	revoked := waitStatus(t, bob, B+"/work/1", http.StatusForbidden, 2*time.Second)
	t.Logf("grant revoked on node A: refused on node B after %s", revoked.Round(time.Millisecond))

	e.cli(t, "grants", "add", "--sub", "bob", "--iss", e.idp.Issuer, "--resource", "projects-app", "--duration", "1h", "--reason", "e2e")
	waitStatus(t, bob, B+"/work/1", http.StatusOK, 2*time.Second)
	start := time.Now()
	e.cli(t, "users", "deprovision", "--user", "bob@contractor.example", "--reason", "contract ended")
	cliTook := time.Since(start)
	dA := waitStatus(t, bob, A+"/work/1", http.StatusUnauthorized, 2*time.Second)
	dB := waitStatus(t, bob, B+"/work/1", http.StatusUnauthorized, 2*time.Second)
	e.bobDeprovisioned = true
	t.Logf("de-provisioned (CLI %s): bob's session refused on node A after %s, node B after %s",
		cliTook.Round(time.Millisecond), dA.Round(time.Millisecond), dB.Round(time.Millisecond))
	for _, g := range e.grants(t, "--user", "bob@contractor.example") {
		t.Errorf("bob still holds %+v", g)
	}
}

// grantsLogoutReplay: alice's session cookie, copied before she logs out
// on node A, is refused on node B as revoked.
func grantsLogoutReplay(t *testing.T, e *grantsEnv) {
	A, B := e.nodeA, e.nodeB
	a := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, a.login(A+"/work/2", "alice"), http.StatusOK)
	c := a.cookie(A, "__Host-gatehouse")
	p := a.navigate(A + "/.gatehouse/logout")
	a.submitForm(p, url.Values{"logout": {"yes"}})
	req, _ := http.NewRequest(http.MethodGet, B+"/work/2", nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Cookie", c.Name+"="+c.Value)
	resp, err := transport(e.ghB).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Reason string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || body.Reason != "revoked" {
		t.Errorf("a copied cookie after logout: %d %q", resp.StatusCode, body.Reason)
	}
}

// grantsRedisDown: with Redis stopped, staff access works, JIT access is
// 503, bob's de-provisioning still holds, and nothing hangs; with Redis
// back, JIT access works again. Needs grantsRevocation (bob
// de-provisioned); it stops Redis, so it runs last.
func grantsRedisDown(t *testing.T, e *grantsEnv) {
	needs(t, e.bobDeprovisioned, "revocation and de-provisioning reach the other node within 2s")
	A, B, bob := e.nodeA, e.nodeB, e.bob
	staff := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, staff.login(A+"/work/3", "carol"), http.StatusOK)
	dave := newBrowser(t, e.ghA, e.ghB)
	dave.login(A+"/", "dave")
	e.cli(t, "grants", "add", "--sub", "dave", "--iss", e.idp.Issuer, "--resource", "projects-app", "--duration", "1h", "--reason", "e2e")
	waitStatus(t, dave, A+"/work/3", http.StatusOK, 2*time.Second)

	e.redis.Stop()
	// What a node read in the last second may still serve (the cache
	// is at most about a second old); after that, the outage shows.
	time.Sleep(1200 * time.Millisecond)
	var mu sync.Mutex
	var lat []time.Duration
	check := func(b *browser, url string, want int) {
		start := time.Now()
		p := b.fetch(http.MethodGet, url)
		mu.Lock()
		lat = append(lat, time.Since(start))
		mu.Unlock()
		if p.StatusCode != want {
			t.Errorf("with Redis down, %s: %d, want %d", url, p.StatusCode, want)
		}
	}
	var wg sync.WaitGroup
	for i := range 20 {
		node := A
		if i%2 == 1 {
			node = B
		}
		wg.Go(func() {
			check(staff, node+"/work/3", http.StatusOK)
			check(dave, node+"/work/3", http.StatusServiceUnavailable)
			check(bob, node+"/work/3", http.StatusUnauthorized)
		})
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99 := lat[len(lat)*99/100]
	t.Logf("with Redis down: %d requests, p50 %s, p99 %s, max %s (grants_timeout 50ms)", len(lat),
		lat[len(lat)/2].Round(time.Millisecond), p99.Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	if p99 > time.Second {
		t.Errorf("p99 %s with Redis down: requests hang", p99)
	}
	p := dave.navigate(A + "/work/3")
	if p.StatusCode != http.StatusServiceUnavailable || !strings.Contains(p.Body, "cannot be checked right now") {
		t.Errorf("the 503 page: %d\n%s", p.StatusCode, p.Body)
	}

	e.redis.Start()
	back := waitStatus(t, dave, A+"/work/3", http.StatusOK, 15*time.Second)
	t.Logf("Redis back: JIT access works again after %s", back.Round(time.Millisecond))
	waitStatus(t, dave, B+"/work/3", http.StatusOK, 15*time.Second)
}

// TestEmbeddedStore runs the contractor-jit example on one node with the
// embedded file store: the ops CLI reaches it through the admin API while
// Caddy holds the file, and grants survive a restart.
func TestEmbeddedStore(t *testing.T) {
	site := fmt.Sprintf("https://localhost:%d", freePort(t))
	p := startIdP(t, idpClient{ClientID: "emb", ClientSecret: "emb-secret",
		RedirectURIs: []string{site + "/.gatehouse/callback"}, PostLogoutRedirectURIs: []string{site + "/.gatehouse/logout"}})
	up := startUpstream(t)
	example, _ := os.ReadFile("../caddyfile-examples/contractor-jit.Caddyfile")
	policy, _ := filepath.Abs("../policies")
	store := "file://" + filepath.Join(t.TempDir(), "grants.db")
	env := []string{"GATEHOUSE_SITE=" + site, "GATEHOUSE_ISSUER=" + p.Issuer, "GATEHOUSE_CLIENT_ID=emb",
		"GATEHOUSE_CLIENT_SECRET=emb-secret", "GATEHOUSE_COOKIE_SECRET=" + randomSecret(t), "GATEHOUSE_GRANTS=" + store,
		"GATEHOUSE_POLICY=" + policy, "GATEHOUSE_UPSTREAM=" + up.Listener.Addr().String()}
	gh := startGatehouse(t, string(example), env, site)
	dave := newBrowser(t, gh)
	mustStatus(t, dave.login(site+"/work/1", "dave"), http.StatusForbidden)

	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(gatehouseBin, append(append([]string{"gatehouse"}, args...), "--store", store, "--admin", gh.admin)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gatehouse %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cli("grants", "add", "--sub", "dave", "--iss", p.Issuer, "--user", "dave@partner.example", "--resource", "projects-app",
		"--duration", "1h", "--reason", "audit", "--by", "ops")
	waitStatus(t, dave, site+"/work/1", http.StatusOK, 2*time.Second)
	if out := cli("grants", "list", "--user", "dave@partner.example"); !strings.Contains(out, "projects-app") || !strings.Contains(out, "active") {
		t.Errorf("grants list through the admin API:\n%s", out)
	}
	if findAudit(auditLine("msg", "grant approved", "user", "dave"), gh, gh) == nil {
		t.Error("the running Caddy did not audit the grant added through its admin API")
	}
	// A restart keeps the grant and the session.
	gh.stop()
	gh2 := startGatehouse(t, string(example), env, site)
	dave2 := newBrowser(t, gh2)
	dave2.jar = dave.jar
	dave2.client.Jar = dave.jar
	if p := dave2.fetch(http.MethodGet, site+"/work/1"); p.StatusCode != http.StatusOK {
		t.Errorf("after a restart: %d %s", p.StatusCode, p.Body)
	}
	// With Caddy stopped, the CLI opens the file itself.
	gh2.stop()
	if out := cli("grants", "list", "--all"); !strings.Contains(out, "dave@partner.example") {
		t.Errorf("grants list on the file directly:\n%s", out)
	}
}

// grantsEvidence exports the history of the subtests before it (through
// the CLI, from Redis) and checks it row by row: bob's request and
// carol's... alice's approval, erin's auto-approval and the operator's
// revocation of it, erin's rejected request, the grants an operator
// added, bob's de-provisioning.
func grantsEvidence(t *testing.T, e *grantsEnv) {
	needs(t, e.alice != nil, "a request is made once and shows on both nodes", "an approver steps up and approves it once")
	rows, err := csv.NewReader(strings.NewReader(e.evidence(t, "csv"))).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("evidence CSV: %v, %d rows", err, len(rows))
	}
	col := map[string]int{}
	for i, c := range rows[0] {
		col[c] = i
	}
	find := func(event string, kv ...string) []string {
		for _, r := range rows[1:] {
			if r[col["event"]] != event {
				continue
			}
			ok := true
			for i := 0; i+1 < len(kv); i += 2 {
				if !strings.Contains(r[col[kv[i]]], kv[i+1]) {
					ok = false
				}
			}
			if ok {
				return r
			}
		}
		return nil
	}
	for _, c := range []struct {
		event string
		kv    []string
	}{
		{"grant requested", []string{"user", "bob", "resource", "projects-app", "app", "projects"}},
		{"grant approved", []string{"user", "bob", "approved_by", "alice@example.com", "resource", "projects-app"}},
		{"grant auto-approved", []string{"user", "erin", "reason", "hotfix"}},
		{"grant revoked", []string{"user", "erin"}},
		{"grant rejected", []string{"user", "erin"}},
		{"grant approved", []string{"user", "bob", "reason", "e2e"}},
		{"user de-provisioned", []string{"user", "bob"}},
	} {
		r := find(c.event, c.kv...)
		if r == nil {
			t.Errorf("no %q row with %v in the export", c.event, c.kv)
			continue
		}
		if _, err := time.Parse(time.RFC3339, r[col["time"]]); err != nil {
			t.Errorf("%q row: time %q", c.event, r[col["time"]])
		}
	}
	if entries := e.evidenceRows(t); len(entries) != len(rows)-1 {
		t.Errorf("the JSON export has %d entries, the CSV %d rows", len(entries), len(rows)-1)
	}
	t.Logf("evidence: %d rows for app projects in the last day", len(rows)-1)
}
