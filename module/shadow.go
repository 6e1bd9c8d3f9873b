package module

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// The shadow policy (policy_shadow, docs/policy-changes.md): a candidate
// policy decided beside the serving one, never enforced. Its engine and
// its queue and workers are shared, like the serving policy's engine, by
// every site and config that names the same directory with the same
// settings.

// policyShadows holds one policies.Shadow per candidate directory and
// settings.
var policyShadows = caddy.NewUsagePool()

// policyShadow returns the shared shadow of the policy_shadow directory,
// or nil without one.
func (h *Handler) policyShadow() (*policies.Shadow, error) {
	if h.PolicyShadow == "" {
		return nil, nil
	}
	dir, err := filepath.Abs(h.PolicyShadow)
	if err != nil {
		return nil, fmt.Errorf("gatehouse: policy_shadow: %v", err)
	}
	opts := policies.Options{Query: h.PolicyQuery, Timeout: time.Duration(h.PolicyTimeout), CacheSize: h.PolicyCache}
	key := fmt.Sprintf("%s\x00%s\x00%s\x00%d", dir, opts.Query, opts.Timeout, opts.CacheSize)
	val, _, err := h.share(policyShadows, key, func() (caddy.Destructor, error) {
		e, err := policies.NewEngine(dir, opts, zap.New(caddyCore{name: "http.handlers.gatehouse.policy_shadow"}))
		if err != nil {
			return nil, err
		}
		return policies.NewShadow(e, 0, 0), nil
	})
	if err != nil {
		return nil, fmt.Errorf("gatehouse: policy_shadow %s: %w", h.PolicyShadow, err)
	}
	return val.(*policies.Shadow), nil
}

// shadowVerdicts returns what the gate calls with the shadow's verdict
// on each request of this site: a dropped one is counted (on the request
// path: one atomic add), a decided one is counted, with each change, and
// a disagreement is audited.
func (h *Handler) shadowVerdicts() func(gate.ShadowVerdict) {
	evaluated := shadowMetrics.evaluations.WithLabelValues(h.App)
	dropped := shadowMetrics.dropped.WithLabelValues(h.App)
	changes := make(map[policies.Change]prometheus.Counter, len(policies.Changes))
	for _, c := range policies.Changes {
		changes[c] = shadowMetrics.disagreements.WithLabelValues(h.App, string(c))
	}
	audit, app := h.auditLog, h.App
	return func(v gate.ShadowVerdict) {
		if v.Dropped {
			dropped.Inc()
			return
		}
		evaluated.Inc()
		for _, c := range v.Changes {
			changes[c].Inc()
		}
		if v.Event != nil {
			writeEvents(audit, app, *v.Event)
		}
	}
}

// shadowMetrics are the shadow policy's (docs/operations.md). Labels:
// the app, and a change from policies.Changes.
var shadowMetrics = struct {
	evaluations, dropped, disagreements *prometheus.CounterVec
	pool                                prometheus.Collector
}{
	evaluations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "policy_shadow_evaluations_total",
		Help: "Requests the shadow (candidate) policy decided beside the serving one, by app."}, []string{"app"}),
	dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "policy_shadow_dropped_total",
		Help: "Requests the shadow policy did not decide because its queue was full (it could not keep up), by app."}, []string{"app"}),
	disagreements: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "policy_shadow_disagreements_total",
		Help: "Changes the shadow policy would have made to served decisions, by app and change (allow_to_deny, deny_to_allow, step_up_added, …)."},
		[]string{"app", "change"}),
	pool: shadowCollector{},
}

// shadowCollectors are registered with Gatehouse's other metrics.
func shadowCollectors() []prometheus.Collector {
	return []prometheus.Collector{shadowMetrics.evaluations, shadowMetrics.dropped, shadowMetrics.disagreements, shadowMetrics.pool}
}

var (
	descShadowRevision = prometheus.NewDesc("gatehouse_policy_shadow_revision_info",
		"The shadow policy's revision being tried, by directory (value 1).", []string{"policy", "revision"}, nil)
	descShadowFailing = prometheus.NewDesc("gatehouse_policy_shadow_reload_failing",
		"1 if the last reload of the shadow policy's directory was refused (its last good revision is still tried).", []string{"policy"}, nil)
)

// shadowCollector reports, at each scrape, each shadow's revision and
// whether its last reload was refused.
type shadowCollector struct{}

func (shadowCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descShadowRevision
	ch <- descShadowFailing
}

func (shadowCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	policyShadows.Range(func(_, value any) bool {
		e := value.(*policies.Shadow).Engine()
		if seen[e.Dir()] {
			return true
		}
		seen[e.Dir()] = true
		st := e.Stats()
		ch <- prometheus.MustNewConstMetric(descShadowRevision, prometheus.GaugeValue, 1, e.Dir(), st.Revision)
		failing := 0.0
		if st.Failing {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(descShadowFailing, prometheus.GaugeValue, failing, e.Dir())
		return true
	})
}
