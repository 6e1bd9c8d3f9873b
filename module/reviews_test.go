package module

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// TestReviewsConfig: defaults, what Validate refuses, and the open-items
// metric the schedule sets.
func TestReviewsConfig(t *testing.T) {
	for _, c := range []struct {
		name    string
		reviews []*Review
		want    string
	}{
		{"twice", []*Review{{Name: "q", Every: caddy.Duration(time.Hour), Reviewers: []string{"m"}}, {Name: "q", Every: caddy.Duration(time.Hour), Reviewers: []string{"m"}}},
			"gatehouse: review: q is defined twice"},
		{"no reviewers", []*Review{{Name: "q", Every: caddy.Duration(time.Hour)}}, "reviewers names no group"},
		{"too often", []*Review{{Name: "q", Every: caddy.Duration(time.Minute), Reviewers: []string{"m"}}}, "every must be at least 1h"},
		{"longer than the period", []*Review{{Name: "q", Every: caddy.Duration(time.Hour), Duration: caddy.Duration(2 * time.Hour), Reviewers: []string{"m"}}},
			"duration must be positive and at most every"},
		{"bad on_timeout", []*Review{{Name: "q", Every: caddy.Duration(time.Hour), Reviewers: []string{"m"}, OnTimeout: "forget"}}, "on_timeout must be keep, revoke or flag"},
		{"a space in the name", []*Review{{Name: "q 1", Every: caddy.Duration(time.Hour), Reviewers: []string{"m"}}}, "review needs a name"},
	} {
		h := validHandler()
		h.Reviews = c.reviews
		if err := tryProvision(h); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}

	// The period before this one saw alice use /x.
	path := filepath.Join(t.TempDir(), "grants.db")
	monthly := &Review{Name: "monthly", Every: caddy.Duration(30 * 24 * time.Hour), Reviewers: []string{"managers"}}
	start := monthly.gateReview().PeriodStart(time.Now())
	s, err := grants.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddUsage(context.Background(), []grants.Usage{{App: "payroll", User: grants.User{Iss: "https://idp.invalid/realms/corp", Sub: "alice"},
		Resource: "/x", Via: grants.ViaStanding, Count: 1, Last: start.Add(-time.Hour).Unix()}}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	h := validHandler()
	h.Grants = "file://" + path
	h.Reviews = []*Review{monthly}
	h, logs := provision(t, h)
	if r := h.Reviews[0]; r.Scope != grants.ScopeAll || r.OnTimeout != grants.ActionFlag || time.Duration(r.Duration) != 14*24*time.Hour {
		t.Errorf("defaults: %+v", r)
	}
	h.gate.CheckReviews(context.Background()) // as Start does after 2 s, and every 30 s
	if got := testutil.ToFloat64(metrics.reviewItems.WithLabelValues("payroll", "monthly")); got != 1 {
		t.Errorf("gatehouse_review_items_open = %v, want 1", got)
	}
	if logs.FilterMessage(gate.EventReviewOpened).Len() != 1 {
		t.Errorf("no event line of the opening: %v", logs.All())
	}
}

// TestReviewsPage: the page is the documented template: what to review
// escaped, forms that post csrf, campaign, item and action, a label for
// the reason, the note on groups, no script.
func TestReviewsPage(t *testing.T) {
	h, _ := provision(t, validHandler())
	a := &gate.Answer{Title: "Access reviews", Page: "reviews", SignedIn: true, User: "Carol", Data: gate.ReviewsPage{CSRF: "tok", GroupsNote: "groups live elsewhere",
		Campaigns: []gate.CampaignView{{ID: "c1", Review: "quarterly", Period: "2026-08-27 to 2026-11-24", Ends: "2026-12-09 10:00 UTC", OnTimeout: "what nobody decided is kept", Unused: 1,
			Items: []gate.ReviewItemView{
				{ID: "i1", Who: `bob<script>alert(1)</script>@example.com`, Resource: "projects-app", Source: "temporary access approved by alice@example.com", LastUsed: "never", Unused: true},
				{ID: "i2", Who: "alice@example.com", Resource: "/docs", Source: "through their groups", LastUsed: "2026-11-20", Count: 4, Decided: "kept by carol@example.com"},
			}}}}}
	body := renderPage(h, true, http.StatusOK, a).Body.String()
	for _, want := range []string{`bob&lt;script&gt;alert(1)&lt;/script&gt;@example.com`, `<form method="post" action="/.gatehouse/reviews">`,
		`name="csrf" value="tok"`, `name="campaign" value="c1"`, `name="item" value="i1"`, `<label for="reason-i1">`, `id="reason-i1" name="reason"`,
		`value="keep">Keep</button>`, `value="revoke">Revoke</button>`, `value="revoke_unused">Revoke everything unused for 30 days (1)</button>`,
		"groups live elsewhere", "kept by carol@example.com", "Last used: never", "quarterly: access from 2026-08-27 to 2026-11-24"} {
		if !strings.Contains(body, want) {
			t.Errorf("no %s in\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script") || strings.Contains(body, `name="item" value="i2"`) {
		t.Errorf("a script, or a form for a decided item:\n%s", body)
	}
	empty := renderPage(h, true, http.StatusOK, &gate.Answer{Page: "reviews", Data: gate.ReviewsPage{}}).Body.String()
	if !strings.Contains(empty, "Nothing waits for your review.") {
		t.Errorf("the empty page:\n%s", empty)
	}
}

// TestReviewsCommand: start opens a campaign now (settings from the
// review's latest campaign, or flags), list exports campaigns with the
// note that groups live in the IdP, lift gives back revoked access.
func TestReviewsCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "grants.db")
	store := "file://" + path
	ctx := context.Background()
	s, err := grants.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	bob := grants.User{Iss: "https://idp", Sub: "bob"}
	if _, err := s.AddGrant(ctx, grants.Grant{User: bob, Email: "bob@example.com", App: "projects", Resource: "projects-app", ApprovedBy: "alice@example.com",
		CreatedAt: now.Add(-time.Hour).Unix(), ExpiresAt: now.Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeResource(ctx, grants.ResourceRevocation{User: bob, App: "projects", Resource: "/docs", At: now.Unix(), By: "carol"}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	// No campaign to take the settings from, and none given.
	if _, err := runCommand(reviewsCommand(), "start", "--store", store, "--app", "projects", "--review", "quarterly"); err == nil ||
		!strings.Contains(err.Error(), "no campaign of review quarterly") {
		t.Errorf("start without settings: %v", err)
	}
	out, err := runCommand(reviewsCommand(), "start", "--store", store, "--app", "projects", "--review", "quarterly", "--every", "90d",
		"--duration", "14d", "--reviewers", "managers,auditors", "--scope", "grants", "--on-timeout", "keep", "--json", "--by", "ops")
	if err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	var res gate.StoreOpResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Campaigns) != 1 {
		t.Fatalf("start: %v\n%s", err, out)
	}
	c := res.Campaigns[0]
	if len(c.Items) != 1 || c.Items[0].GrantID == "" || c.Items[0].ApprovedBy != "alice@example.com" || c.OpenedBy != "ops" ||
		c.PeriodEnd-c.PeriodStart != 90*24*3600 || strings.Join(c.Reviewers, ",") != "managers,auditors" {
		t.Errorf("the campaign: %+v", c)
	}
	// Again, with the latest campaign's settings: a second campaign.
	if _, err := runCommand(reviewsCommand(), "start", "--store", store, "--app", "projects", "--review", "quarterly"); err != nil {
		t.Fatal(err)
	}
	out, err = runCommand(reviewsCommand(), "list", "--store", store, "--app", "projects")
	if err != nil || strings.Count(out, "campaign manual-") != 2 || !strings.Contains(out, "groups, which live in the IdP") ||
		!strings.Contains(out, "projects-app\tgrant") && !strings.Contains(out, "projects-app  grant") {
		t.Errorf("list: %v\n%s", err, out)
	}
	if _, err := runCommand(reviewsCommand(), "lift", "--store", store, "--app", "projects", "--sub", "bob", "--iss", "https://idp", "--resource", "/work"); err == nil {
		t.Error("lifting a revocation that does not exist")
	}
	if out, err := runCommand(reviewsCommand(), "lift", "--store", store, "--app", "projects", "--sub", "bob", "--iss", "https://idp", "--resource", "/docs"); err != nil ||
		!strings.Contains(out, "lifted") {
		t.Errorf("lift: %v\n%s", err, out)
	}
	s, _ = grants.OpenBolt(path)
	defer s.Close()
	if rr, _ := s.ResourceRevocations(ctx); len(rr) != 0 {
		t.Errorf("after the lift: %+v", rr)
	}
}
