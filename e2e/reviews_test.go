package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// reviewBlock is the access review the nodes run: quarterly, reviewed by
// managers (carol), what nobody decides in two weeks is flagged.
const reviewBlock = "review quarterly {\n\t\t\tevery 90d\n\t\t\treviewers managers\n\t\t\tscope all\n\t\t\ton_timeout flag\n\t\t\tduration 14d\n\t\t}"

type cliCampaign struct {
	ID       string
	Review   string
	OpenedBy string `json:"opened_by"`
	Items    []struct {
		ID       string
		Resource string
		Source   string
		GrantID  string `json:"grant_id"`
		User     struct{ Sub string }
		Decision *struct {
			Action, By, Reason string
			Applied            bool
		}
	}
}

func (e *jitEnv) campaigns(t *testing.T, args ...string) []cliCampaign {
	var cs []cliCampaign
	_ = json.Unmarshal(e.cli(t, append([]string{"reviews", "list", "--app", "projects"}, args...)...)["campaigns"], &cs)
	return cs
}

// TestAccessReviews: two nodes on Redis run the contractor-jit example
// with a quarterly review. The period's campaign opens once, whatever
// the nodes; an operator opens one now; carol, a manager, reviews on the
// page in Chromium after her one-time code, revokes bob's grant (unused
// in the period), and bob is out at his next request on both nodes.
// Hostile forms are refused.
func TestAccessReviews(t *testing.T) {
	e := startJITWith(t, reviewBlock, "", "")
	A, B := e.nodeA, e.nodeB

	// Both nodes checked the schedule at start (each then has the
	// metric): one campaign, one audit line.
	if !eventually(10*time.Second, func() bool {
		return scrape(t, e.ghA).has(`gatehouse_review_items_open{app="projects",review="quarterly"}`) &&
			scrape(t, e.ghB).has(`gatehouse_review_items_open{app="projects",review="quarterly"}`)
	}) {
		t.Fatal("the nodes did not check their review schedule within 10s")
	}
	opened := 0
	for _, g := range []*gatehouse{e.ghA, e.ghB} {
		for _, l := range g.auditLines() {
			if l["msg"] == "access review opened" {
				opened++
			}
		}
	}
	if cs := e.campaigns(t); len(cs) != 1 || cs[0].OpenedBy != "schedule" || opened != 1 {
		t.Fatalf("with two nodes: %d campaigns (%+v), %d opening lines; want one", len(cs), cs, opened)
	}

	// bob gets projects-app, carol projects-admin; an operator opens a
	// campaign now, before either used theirs.
	e.cli(t, "grants", "add", "--sub", "bob", "--iss", e.idp.Issuer, "--resource", "projects-app", "--duration", "1h", "--reason", "sprint", "--app", "projects")
	e.cli(t, "grants", "add", "--sub", "carol", "--iss", e.idp.Issuer, "--resource", "projects-admin", "--duration", "1h", "--reason", "keys", "--app", "projects")
	var started []cliCampaign
	_ = json.Unmarshal(e.cli(t, "reviews", "start", "--app", "projects", "--review", "quarterly")["campaigns"], &started)
	if len(started) != 1 || len(started[0].Items) != 2 {
		t.Fatalf("reviews start: %+v", started)
	}
	c := started[0]
	item := map[string]string{}
	for _, it := range c.Items {
		item[it.User.Sub] = it.ID
	}

	// bob is in on both nodes.
	bob := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, bob.login(A+"/work/1", "bob"), http.StatusOK)
	mustStatus(t, bob.fetch(http.MethodGet, B+"/work/1"), http.StatusOK)

	// carol, in Chromium: the reviews page asks for her second factor,
	// then shows bob's grant, never used in the period.
	carol := newChrome(t, "carol")
	carol.do("opening the reviews", chromedp.Navigate(A+"/.gatehouse/reviews"))
	carol.waitFor("http://127.0.0.1", "One-time code")
	carol.signIn("carol", "333333")
	carol.waitFor(A+"/.gatehouse/reviews", "projects-app")
	text := carol.text()
	for _, want := range []string{"temporary access approved by e2e-ops", "Last used: never", "an administrator must also remove the person from the group"} {
		if !strings.Contains(text, want) {
			carol.fail("the reviews page lacks %q", want)
		}
	}
	if strings.Contains(text, "projects-admin") {
		carol.fail("carol is shown her own access")
	}
	carol.do("revoking bob's grant",
		chromedp.SendKeys(chromedp.CSS("#reason-"+item["bob"]), "contract ended"),
		chromedp.Click(chromedp.CSS(`form:has(input[name=item][value="`+item["bob"]+`"]) button[value=revoke]`)),
	)
	carol.waitFor(A+"/.gatehouse/reviews?notice=revoked", "Revoked")
	// Out at his next request, on both nodes.
	for _, node := range []string{A, B} {
		if p := bob.fetch(http.MethodGet, node+"/work/1"); p.StatusCode != http.StatusForbidden {
			t.Errorf("bob's next request on %s: %d, want 403", node, p.StatusCode)
		}
	}
	if l := findAudit(auditLine("msg", "access revoked in review", "user", "bob", "actor", "carol", "why", "contract ended", "campaign", c.ID), e.ghA); l == nil {
		t.Error("no audit line of the revoke")
	}
	if findAudit(auditLine("msg", "grant revoked", "user", "bob", "actor", "carol"), e.ghA) == nil {
		t.Error("no grant revoked line")
	}

	// Hostile forms, as carol (stepped up) and alice (no reviewer).
	cb := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, cb.login(B+"/", "carol"), http.StatusOK)
	rp := cb.submitLoginOTP(cb.navigate(B+"/.gatehouse/reviews"), "carol", "333333")
	mustStatus(t, rp, http.StatusOK)
	var js struct{ CSRF string }
	cb.fetch(http.MethodGet, B+"/.gatehouse/reviews").json(t, &js)
	post := func(b *browser, v url.Values, hdr map[string]string) *http.Response {
		return b.post(B+"/.gatehouse/reviews", v, hdr)
	}
	decide := func(csrf, it, action string) url.Values {
		return url.Values{"csrf": {csrf}, "campaign": {c.ID}, "item": {it}, "action": {action}, "reason": {"x"}}
	}
	for _, h := range []struct {
		name string
		v    url.Values
		hdr  map[string]string
		want int
	}{
		{"no CSRF token", url.Values{"campaign": {c.ID}, "item": {item["bob"]}, "action": {"keep"}}, nil, 403},
		{"another site", decide(js.CSRF, item["bob"], "keep"), map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"her own access", decide(js.CSRF, item["carol"], "keep"), nil, 403},
		{"an unknown item", decide(js.CSRF, "0123456789abcdef", "keep"), nil, 404},
		{"an unknown campaign", url.Values{"csrf": {js.CSRF}, "campaign": {"nope"}, "item": {item["bob"]}, "action": {"keep"}}, nil, 404},
	} {
		if resp := post(cb, h.v, h.hdr); resp.StatusCode != h.want {
			t.Errorf("%s: %d, want %d", h.name, resp.StatusCode, h.want)
		}
	}
	if resp := post(cb, decide(js.CSRF, item["bob"], "keep"), nil); resp.StatusCode != http.StatusSeeOther ||
		resp.Header.Get("Location") != "/.gatehouse/reviews?notice=already_decided" {
		t.Errorf("deciding twice: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if findAudit(auditLine("msg", "review refused", "user", "carol", "actor", "carol"), e.ghB) == nil {
		t.Error("no audit line for carol's self-review")
	}
	alice := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, alice.login(B+"/", "alice"), http.StatusOK)
	ap := alice.submitLoginOTP(alice.navigate(B+"/.gatehouse/reviews"), "alice", "111111")
	if mustStatus(t, ap, http.StatusOK); strings.Contains(ap.Body, "projects-admin") {
		t.Error("alice, no reviewer, is shown what to review")
	}
	var ajs struct{ CSRF string }
	alice.fetch(http.MethodGet, B+"/.gatehouse/reviews").json(t, &ajs)
	if resp := post(alice, decide(ajs.CSRF, item["carol"], "revoke"), nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("alice, no reviewer, revoking: %d", resp.StatusCode)
	}

	// The export: carol's item is still open, bob's revoked and carried
	// out; groups are said to live in the IdP.
	for _, got := range e.campaigns(t) {
		if got.ID != c.ID {
			continue
		}
		for _, it := range got.Items {
			switch it.User.Sub {
			case "bob":
				if it.Decision == nil || it.Decision.Action != "revoke" || !it.Decision.Applied || it.Decision.By != "carol@example.com" {
					t.Errorf("bob's item: %+v", it.Decision)
				}
			case "carol":
				if it.Decision != nil {
					t.Errorf("carol's item was decided: %+v", it.Decision)
				}
			}
		}
	}
	if note := string(e.cli(t, "reviews", "list", "--app", "projects")["note"]); !strings.Contains(note, "live in the IdP") {
		t.Errorf("the export's note: %s", note)
	}
	// The evidence export has the campaign from its opening to carol's
	// revocation, with the grant it ended.
	rows := e.evidenceRows(t)
	seen := map[string]bool{}
	for _, r := range rows {
		ev, _ := r["event"].(string)
		seen[ev] = true
		if ev == "access revoked in review" && r["user"] != "bob" {
			t.Errorf("a review revocation of %v", r["user"])
		}
	}
	for _, want := range []string{"access review opened", "access revoked in review", "grant revoked"} {
		if !seen[want] {
			t.Errorf("the evidence export has no %q row", want)
		}
	}
}
