package module

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// Gatehouse's metrics (docs/operations.md). They are process-wide, like
// Caddy's own: counters survive config reloads, and each config's
// registry (Caddy makes one per config) registers the same collectors.
// No label holds a user, a path, a grant id or anything else a client
// chooses: apps, stores and policy directories come from the config,
// results and reasons from fixed lists.
var metrics = struct {
	decisions       *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	logins          *prometheus.CounterVec
	stepUps         *prometheus.CounterVec
	policyEvals     *prometheus.CounterVec
	policyErrors    *prometheus.CounterVec
	jit             *prometheus.CounterVec
	sessionsRevoked *prometheus.CounterVec
	forms           *prometheus.CounterVec
	storeCalls      *prometheus.CounterVec
	storeLatency    *prometheus.HistogramVec
	storeUp         *prometheus.GaugeVec
	reviewItems     *prometheus.GaugeVec
	pools           prometheus.Collector
}{
	decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "decisions_total",
		Help: "Requests Gatehouse decided, by app, result and reason (as in the audit log)."}, []string{"app", "result", "reason"}),
	latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "gatehouse", Name: "decision_duration_seconds",
		Help:    "Time Gatehouse spent on a request (not the upstream's), by app and result.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"app", "result"}),
	logins: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "logins_total",
		Help: "Sign-ins started, completed and failed (with the reason), by app."}, []string{"app", "result", "reason"}),
	stepUps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "step_ups_total",
		Help: "Step-ups started, succeeded and refused, by app."}, []string{"app", "result"}),
	policyEvals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "policy_evaluations_total",
		Help: "Policy decisions, by app and whether the decision cache answered (cache=hit) or the policy was evaluated (miss)."},
		[]string{"app", "cache"}),
	policyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "policy_errors_total",
		Help: "Policy evaluations that failed (timeout, bad decision): each denied with policy_error."}, []string{"app"}),
	jit: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "jit_events_total",
		Help: "Just-in-time access: requests, approvals (manual and automatic), rejections, revocations and expiries."},
		[]string{"app", "event"}),
	sessionsRevoked: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "sessions_revoked_total",
		Help: "Sessions ended: a logout (one session), a user logged out everywhere, a user de-provisioned, a back-channel logout from the IdP."}, []string{"app", "how"}),
	forms: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "forms_total",
		Help: "Forms posted after a session ended: kept while the user signs in again, restored (offered to send again), dropped."},
		[]string{"app", "event"}),
	storeCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gatehouse", Name: "grant_store_calls_total",
		Help: "Calls to the grant store, by store, operation and result (error: the store failed or could not be reached)."},
		[]string{"store", "op", "result"}),
	storeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "gatehouse", Name: "grant_store_call_duration_seconds",
		Help:    "Time grant store calls took, by store and operation.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}}, []string{"store", "op"}),
	storeUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "gatehouse", Name: "grant_store_up",
		Help: "1 if the grant store answered its last call, 0 if it failed."}, []string{"store"}),
	reviewItems: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "gatehouse", Name: "review_items_open",
		Help: "Items of open access-review campaigns nobody decided yet, by app and review (the store's count: the same on every node)."},
		[]string{"app", "review"}),
	pools: poolCollector{},
}

// registerMetrics registers Gatehouse's collectors with this config's
// registry (none in tests that provision without Caddy); a collector
// already registered by another handler of the same config is fine.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range append([]prometheus.Collector{metrics.decisions, metrics.latency, metrics.logins, metrics.stepUps,
		metrics.policyEvals, metrics.policyErrors, metrics.jit, metrics.sessionsRevoked, metrics.forms, metrics.storeCalls,
		metrics.storeLatency, metrics.storeUp, metrics.reviewItems, metrics.pools}, shadowCollectors()...) {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	return nil
}

// appMetrics are one app's decision series, found without hashing label
// values on every request.
type appMetrics struct {
	app    string
	series sync.Map // decisionKey → *decisionSeries
	// The app's series every request may move.
	evalHit, evalMiss, policyErrors, loginsStarted, loginsOK, logouts prometheus.Counter
}

func newAppMetrics(app string) *appMetrics {
	return &appMetrics{app: app,
		evalHit: metrics.policyEvals.WithLabelValues(app, "hit"), evalMiss: metrics.policyEvals.WithLabelValues(app, "miss"),
		policyErrors:  metrics.policyErrors.WithLabelValues(app),
		loginsStarted: metrics.logins.WithLabelValues(app, "started", ""), loginsOK: metrics.logins.WithLabelValues(app, "ok", ""),
		logouts: metrics.sessionsRevoked.WithLabelValues(app, "logout"),
	}
}

type decisionKey struct {
	result gate.Result
	reason gate.Reason
}

type decisionSeries struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// observe counts one decided request (not a probe).
func (m *appMetrics) observe(out *gate.Outcome, took time.Duration) {
	k := decisionKey{out.Result, metricReason(out.Reason)}
	s, ok := m.series.Load(k)
	if !ok {
		s, _ = m.series.LoadOrStore(k, &decisionSeries{
			count:   metrics.decisions.WithLabelValues(m.app, string(k.result), string(k.reason)),
			latency: metrics.latency.WithLabelValues(m.app, string(k.result)),
		})
	}
	ds := s.(*decisionSeries)
	ds.count.Inc()
	ds.latency.Observe(took.Seconds())
	a := &out.Audit
	switch {
	case a.Revision == "":
	case a.Cached:
		m.evalHit.Inc()
	default:
		m.evalMiss.Inc()
	}
	switch out.Result {
	case gate.ResultAllow:
	case gate.ResultLogin:
		m.loginsStarted.Inc()
	case gate.ResultLoginOK:
		m.loginsOK.Inc()
	case gate.ResultLoginFailed:
		if !hasEvent(out, gate.EventStepUpRefused) {
			metrics.logins.WithLabelValues(m.app, "failed", string(k.reason)).Inc()
		}
	case gate.ResultLogout:
		if out.Reason != gate.ReasonLogoutNotRecorded && out.Reason != gate.ReasonBackchannelLogout {
			m.logouts.Inc()
		}
	}
	if out.Reason == gate.ReasonPolicyError {
		m.policyErrors.Inc()
	}
}

func hasEvent(out *gate.Outcome, msg string) bool {
	for _, e := range out.Events {
		if e.Msg == msg {
			return true
		}
	}
	return false
}

// eventMetrics are the counters an event line moves.
var eventMetrics = map[string]struct {
	vec   *prometheus.CounterVec
	label string
}{
	gate.EventStepUpStarted:     {metrics.stepUps, "started"},
	gate.EventStepUpSucceeded:   {metrics.stepUps, "succeeded"},
	gate.EventStepUpRefused:     {metrics.stepUps, "refused"},
	gate.EventGrantRequested:    {metrics.jit, "requested"},
	gate.EventGrantAutoApproved: {metrics.jit, "auto_approved"},
	gate.EventGrantApproved:     {metrics.jit, "approved"},
	gate.EventGrantRejected:     {metrics.jit, "rejected"},
	gate.EventGrantRevoked:      {metrics.jit, "revoked"},
	gate.EventGrantExpired:      {metrics.jit, "expired"},
	gate.EventUserLoggedOut:     {metrics.sessionsRevoked, "everywhere"},
	gate.EventUserDeprovisioned: {metrics.sessionsRevoked, "deprovisioned"},
	gate.EventBackchannelLogout: {metrics.sessionsRevoked, "backchannel"},
	gate.EventFormKept:          {metrics.forms, "kept"},
	gate.EventFormRestored:      {metrics.forms, "restored"},
	gate.EventFormDropped:       {metrics.forms, "dropped"},
}

// countEvent moves the counter of an event that happened (a failed one
// is not counted). app is "" for an operator's store operation.
func countEvent(app string, e gate.Event) {
	if m, ok := eventMetrics[e.Msg]; ok && !e.Failed {
		m.vec.WithLabelValues(app, m.label).Inc()
	}
}

// idpErrors are the error codes of OAuth 2.0 and OpenID Connect an IdP
// may send back; any other idp_<code> reason (the callback's query is the
// client's to choose) is counted as idp_other.
var idpErrors = map[gate.Reason]bool{}

func init() {
	for _, c := range []string{"invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type",
		"invalid_scope", "server_error", "temporarily_unavailable", "interaction_required", "login_required",
		"account_selection_required", "consent_required", "invalid_request_uri", "invalid_request_object",
		"request_not_supported", "request_uri_not_supported", "registration_not_supported"} {
		idpErrors[gate.Reason("idp_"+c)] = true
	}
}

// metricReason bounds a reason for a label.
func metricReason(r gate.Reason) gate.Reason {
	if strings.HasPrefix(string(r), "idp_") && r != gate.ReasonIdPUnavailable && r != gate.ReasonIdPLogout &&
		r != gate.ReasonIdPError && !idpErrors[r] {
		return "idp_other"
	}
	return r
}

// storeLabel names a grant store in metrics: its URL without user,
// password or query.
func storeLabel(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "invalid"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// storeObserver records a store's calls.
func storeObserver(store string) grants.Observer {
	up := metrics.storeUp.WithLabelValues(store)
	up.Set(1)
	return func(op string, took time.Duration, err error) {
		result := "ok"
		if grants.Outage(err) {
			result = "error"
			up.Set(0)
		} else {
			up.Set(1)
		}
		metrics.storeCalls.WithLabelValues(store, op, result).Inc()
		metrics.storeLatency.WithLabelValues(store, op).Observe(took.Seconds())
	}
}

// poolCollector reports, at each scrape, what lives in the usage pools:
// each policy engine's reloads and serving revision, and each grant
// store's active grants.
type poolCollector struct{}

var (
	descReloads = prometheus.NewDesc("gatehouse_policy_reloads_total",
		"Policy reloads by directory: ok (loaded; the revision may be unchanged) and refused (the last good revision kept serving).",
		[]string{"policy", "result"}, nil)
	descRevision = prometheus.NewDesc("gatehouse_policy_revision_info",
		"The policy revision serving, by directory (value 1).", []string{"policy", "revision"}, nil)
	descReloadFailing = prometheus.NewDesc("gatehouse_policy_reload_failing",
		"1 if the last reload of the policy directory was refused.", []string{"policy"}, nil)
	descActiveGrants = prometheus.NewDesc("gatehouse_grants_active",
		"Grants in force, by store (counted at most every 15 s).", []string{"store"}, nil)
	descEventsLive = prometheus.NewDesc("gatehouse_grant_store_events_live",
		"1 while the node hears its own heartbeats through the store's events (its cache entries need no store round trip); 0 when they stopped for a second (it reads the store once a second per session).",
		[]string{"store"}, nil)
	descCircuitOpen = prometheus.NewDesc("gatehouse_grant_store_circuit_open",
		"1 while store reads failed in a row and lookups answer from the node's local state without asking the store (one probe every 100 ms).",
		[]string{"store"}, nil)
)

func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReloads
	ch <- descRevision
	ch <- descReloadFailing
	ch <- descActiveGrants
	ch <- descEventsLive
	ch <- descCircuitOpen
}

func (poolCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	policyEngines.Range(func(_, value any) bool {
		e := value.(*policies.Engine)
		if seen[e.Dir()] {
			return true
		}
		seen[e.Dir()] = true
		st := e.Stats()
		ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(st.Reloads), e.Dir(), "ok")
		ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(st.Refused), e.Dir(), "refused")
		ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, 1, e.Dir(), st.Revision)
		ch <- prometheus.MustNewConstMetric(descReloadFailing, prometheus.GaugeValue, oneIf(st.Failing), e.Dir())
		return true
	})
	counted := map[string]bool{}
	grantStores.Range(func(key, value any) bool {
		url, _, _ := strings.Cut(key.(string), "\x00")
		label := storeLabel(url)
		if counted[label] {
			return true
		}
		counted[label] = true
		c := value.(*grants.Cache)
		if n, ok := activeGrants.count(label, c.Store()); ok {
			ch <- prometheus.MustNewConstMetric(descActiveGrants, prometheus.GaugeValue, float64(n), label)
		}
		ch <- prometheus.MustNewConstMetric(descEventsLive, prometheus.GaugeValue, oneIf(c.Live()), label)
		ch <- prometheus.MustNewConstMetric(descCircuitOpen, prometheus.GaugeValue, oneIf(c.CircuitOpen()), label)
		return true
	})
}

// activeGrants counts each store's grants in force for the metrics.
var activeGrants = newGrantCounts()

// Counting lists every grant of every user: cheap for a few thousand
// users, seconds of store work for a million. A count is made at most
// every countEvery; one that fails or takes over countSlow makes the next
// wait ten times longer, up to countMax, so that scrapes never keep the
// store busy with listings.
const (
	countEvery = 15 * time.Second
	countSlow  = 250 * time.Millisecond
	countMax   = time.Hour
)

type grantCounts struct {
	mu   sync.Mutex
	next map[string]time.Time     // when a count may be made again
	wait map[string]time.Duration // the last wait chosen
	n    map[string]int           // the last count, if it succeeded
}

func newGrantCounts() *grantCounts {
	return &grantCounts{next: map[string]time.Time{}, wait: map[string]time.Duration{}, n: map[string]int{}}
}

// count returns the store's grants in force: counted now, or the last
// count while the next may not be made yet; ok is false when the last
// count failed.
func (c *grantCounts) count(label string, s grants.Store) (n int, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Now().Before(c.next[label]) {
		n, ok = c.n[label]
		return n, ok
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	gs, err := s.Grants(ctx, grants.GrantFilter{Now: start})
	wait := countEvery
	if took := time.Since(start); err != nil || took > countSlow {
		wait = min(max(c.wait[label], countEvery)*10, countMax)
		caddy.Log().Named("http.handlers.gatehouse").Debug("counting active grants for metrics: the next count waits",
			zap.Duration("took", took), zap.Duration("wait", wait), zap.Error(err))
	}
	c.wait[label], c.next[label] = wait, time.Now().Add(wait)
	if err != nil {
		delete(c.n, label)
		return 0, false
	}
	c.n[label] = len(gs)
	return len(gs), true
}

func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
