package module

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// TestMetrics: decided requests move the decision counters and the
// latency histogram of their app, probes move nothing, and the registry
// of the config (pedantic, as Caddy's) gathers every Gatehouse metric,
// also when a second handler registers the same collectors.
func TestMetrics(t *testing.T) {
	now := time.Unix(1_764_000_000, 0)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	h := validHandler()
	h.App = "metrics-test"
	h.now = func() time.Time { return now }
	if err := h.provision(ctx, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	second := validHandler()
	second.App = "metrics-test-2"
	if err := second.provision(ctx, zap.NewNop()); err != nil {
		t.Fatalf("a second handler in the same config: %v", err)
	}
	t.Cleanup(func() { _ = second.Cleanup() })

	allow := metrics.decisions.WithLabelValues("metrics-test", "allow", "")
	unauth := metrics.decisions.WithLabelValues("metrics-test", "unauthenticated", string(authn.ReasonNoCookie))
	before := testutil.ToFloat64(allow)
	sess := &authn.Session{ID: "s1", Subject: "alice", Created: now.Add(-time.Hour).Unix(), LastSeen: now.Unix()}
	for range 3 {
		r := httptest.NewRequest(http.MethodGet, "https://app.example.com/reports", nil)
		r.AddCookie(sessionCookie(t, h, sess))
		serve(h, r)
	}
	serve(h, httptest.NewRequest(http.MethodGet, "https://app.example.com/api", nil))
	for range 5 {
		serve(h, httptest.NewRequest(http.MethodGet, "https://app.example.com/.gatehouse/healthz", nil))
	}
	if got := testutil.ToFloat64(allow) - before; got != 3 {
		t.Errorf("allowed requests counted %v, want 3", got)
	}
	if got := testutil.ToFloat64(unauth); got != 1 {
		t.Errorf("unauthenticated requests counted %v, want 1", got)
	}
	if n := testutil.CollectAndCount(metrics.decisions, "gatehouse_decisions_total"); n == 0 {
		t.Error("no decision series")
	}
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatalf("gathering the config's registry: %v", err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == string(gate.ReasonHealthz) {
					t.Error("a health probe was counted")
				}
			}
		}
	}
	for _, want := range []string{"gatehouse_decisions_total", "gatehouse_decision_duration_seconds", "gatehouse_grants_active",
		"gatehouse_grant_store_up"} {
		if !names[want] {
			t.Errorf("the registry has no %s", want)
		}
	}
}

// TestMetricLabelsAreBounded: a reason the client chooses (the IdP error
// code of a forged callback) never becomes a label value of its own, and
// a store's label never carries its password.
func TestMetricLabelsAreBounded(t *testing.T) {
	for in, want := range map[gate.Reason]gate.Reason{
		"idp_access_denied": "idp_access_denied", "idp_login_required": "idp_login_required",
		"idp_made_up_by_an_attacker": "idp_other", "idp_unavailable": "idp_unavailable", "idp_logout": "idp_logout",
		"idp_error": "idp_error", "policy_deny": "policy_deny", "nonce_mismatch": "nonce_mismatch",
	} {
		if got := metricReason(in); got != want {
			t.Errorf("metricReason(%s) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"redis://:s3cret@redis.internal:6379/0?dial_timeout=1s": "redis://redis.internal:6379/0",
		"rediss://user:pw@r1:6380,r2:6380/1":                    "rediss://r1:6380,r2:6380/1",
		"file:///var/lib/gatehouse/grants.db":                   "file:///var/lib/gatehouse/grants.db",
		"memory:":                                               "memory:",
	} {
		if got := storeLabel(in); got != want || strings.Contains(got, "s3cret") {
			t.Errorf("storeLabel(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestMemoryStoreWarning: the in-memory grant store is worth a warning
// only when a policy can grant access; without one it only records
// logouts, which is said at info.
func TestMemoryStoreWarning(t *testing.T) {
	for _, c := range []struct {
		policy string
		warn   bool
	}{{"", false}, {"../policies", true}} {
		h := validHandler()
		h.Policy = c.policy
		h.GrantsTimeout = caddy.Duration(77 * time.Millisecond) // a store of its own in the pool
		_, logs := provision(t, h)
		warned := logs.FilterLevelExact(zap.WarnLevel).FilterMessageSnippet("grant store in memory").Len() > 0
		said := logs.FilterMessageSnippet("grant store in memory").Len() > 0
		if warned != c.warn || !said {
			t.Errorf("policy %q: warned %v, said %v; want warned %v", c.policy, warned, said, c.warn)
		}
		_ = h.Cleanup()
	}
}

// BenchmarkMetricsObserve is what the metrics add to an allowed request
// with a policy decision.
func BenchmarkMetricsObserve(b *testing.B) {
	m := newAppMetrics("bench")
	out := &gate.Outcome{Kind: gate.Allow, Result: gate.ResultAllow, Audit: gate.Audit{Revision: "r1", Cached: true}}
	b.ReportAllocs()
	for b.Loop() {
		m.observe(out, 5*time.Microsecond)
	}
}

// TestEventMetrics: every event with a counter moves it once, a failed
// one never.
func TestEventMetrics(t *testing.T) {
	for msg, m := range eventMetrics {
		c := m.vec.WithLabelValues("events-test", m.label)
		before := testutil.ToFloat64(c)
		countEvent("events-test", gate.Event{Msg: msg})
		countEvent("events-test", gate.Event{Msg: msg, Failed: true})
		if got := testutil.ToFloat64(c) - before; got != 1 {
			t.Errorf("%s moved %s{%s} by %v", msg, "counter", m.label, got)
		}
	}
	if len(eventMetrics) < 15 {
		t.Errorf("only %d events are counted", len(eventMetrics))
	}
}

// listingStore counts its listings of every grant, which take delay and
// fail while failing is set.
type listingStore struct {
	grants.Store
	delay    time.Duration
	failing  bool
	listings int
}

func (l *listingStore) Grants(ctx context.Context, f grants.GrantFilter) ([]grants.Grant, error) {
	l.listings++
	time.Sleep(l.delay)
	if l.failing {
		return nil, grants.ErrUnavailable
	}
	return l.Store.Grants(ctx, f)
}

func TestActiveGrantsCountBacksOff(t *testing.T) {
	mem := grants.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	now := time.Now()
	if _, err := mem.AddGrant(context.Background(), grants.Grant{User: grants.User{Iss: "https://idp", Sub: "dave"}, Resource: "db",
		CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		store    *listingStore
		wantOK   bool
		wantWait time.Duration
	}{
		{"fast", &listingStore{}, true, countEvery},
		{"slow (a store with very many users)", &listingStore{delay: countSlow + 50*time.Millisecond}, true, 10 * countEvery},
		{"failing", &listingStore{failing: true}, false, 10 * countEvery},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.store.Store = mem
			c := newGrantCounts()
			for range 5 { // five scrapes in a row: one listing
				if n, ok := c.count("s", tc.store); ok != tc.wantOK || ok && n != 1 {
					t.Fatalf("count: %d %v, want 1 %v", n, ok, tc.wantOK)
				}
			}
			if tc.store.listings != 1 {
				t.Fatalf("5 scrapes listed every grant %d times, want 1", tc.store.listings)
			}
			if c.wait["s"] != tc.wantWait {
				t.Fatalf("the next count waits %s, want %s", c.wait["s"], tc.wantWait)
			}
			// Each slow or failed count waits ten times longer, up to an hour.
			c.next["s"] = time.Time{}
			c.count("s", tc.store)
			if want := min(tc.wantWait*10, countMax); tc.wantWait > countEvery && c.wait["s"] != want {
				t.Fatalf("after a second slow count the wait is %s, want %s", c.wait["s"], want)
			}
		})
	}
}
