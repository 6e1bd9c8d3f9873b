package gate

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Readiness is /.gatehouse/readyz's answer: whether this node can serve
// everything its configuration asks for, and the state of each
// dependency ("up" or "down"; "timeout" for one that did not answer in
// time, which counts as down). It names no address and no error: the
// endpoint needs no session, and the log has the details.
type Readiness struct {
	Status string            `json:"status"` // "ready", or "not_ready" (with 503)
	IdP    map[string]string `json:"idp"`    // each sign-in IdP ("primary" for the one-IdP settings) and step-out provider, by name
	Grants string            `json:"grants"` // the grant store
	Policy *PolicyReadiness  `json:"policy,omitempty"`
}

// PolicyReadiness is the policy's part of Readiness. A refused reload
// does not make a node unready (the last good revision serves), but it
// is reported.
type PolicyReadiness struct {
	Revision      string `json:"revision"`
	ReloadFailing bool   `json:"reload_failing"`
}

// Readiness checks are answered from the last check for readyFor, so
// that probes (or anyone: the endpoint is open) cannot turn into load on
// the IdP or the store; a check waits at most readyWait for each
// dependency.
const (
	readyFor  = time.Second
	readyWait = time.Second
)

// readiness is the last readiness check, and the one running.
type readiness struct {
	mu      sync.Mutex
	last    Readiness
	at      time.Time
	running chan struct{} // closed when the running check ends; nil when none runs
	down    map[string]bool
}

// healthz answers liveness checks: the process serves. It says nothing of
// the dependencies (that is readyz), costs nothing, and writes no audit
// line.
func (g *Gate) healthz(req *Request, out Outcome) Outcome {
	out.Kind, out.Status, out.Result, out.Reason, out.Quiet = Page, http.StatusOK, ResultInternal, ReasonHealthz, true
	out.setHeader("Content-Type", "application/json")
	out.setHeader("Cache-Control", "no-store")
	if req.HTTP.Method == http.MethodGet {
		out.Body = []byte(`{"status":"ok"}` + "\n")
	}
	return out
}

// readyz answers readiness checks: 200 when the IdPs and the grant store
// answer, else 503; no audit line.
func (g *Gate) readyz(req *Request, out Outcome) Outcome {
	r := g.Ready(req.HTTP.Context(), req.Start)
	out.Kind, out.Status, out.Result, out.Reason, out.Quiet = Page, http.StatusOK, ResultInternal, ReasonReadyz, true
	if r.Status != "ready" {
		out.Status = http.StatusServiceUnavailable
	}
	out.setHeader("Content-Type", "application/json")
	out.setHeader("Cache-Control", "no-store")
	if req.HTTP.Method == http.MethodGet {
		b, err := json.Marshal(r)
		if err != nil {
			return out.fail(err)
		}
		out.Body = append(b, '\n')
	}
	return out
}

// Ready checks the dependencies, or returns the last check if it is
// recent. Concurrent callers share one check.
func (g *Gate) Ready(ctx context.Context, now time.Time) Readiness {
	rd := &g.ready
	rd.mu.Lock()
	if !rd.at.IsZero() && now.Sub(rd.at) < readyFor {
		defer rd.mu.Unlock()
		return rd.last
	}
	running := rd.running
	if running == nil {
		running = make(chan struct{})
		rd.running = running
		go func() {
			r, failed := g.checkReady(context.WithoutCancel(ctx))
			rd.mu.Lock()
			g.logChanges(failed)
			rd.last, rd.at, rd.running = r, g.now(), nil
			rd.mu.Unlock()
			close(running)
		}()
	}
	rd.mu.Unlock()
	select {
	case <-running:
	case <-ctx.Done():
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.at.IsZero() {
		return Readiness{Status: "not_ready"}
	}
	return rd.last
}

// checkReady asks every dependency at once, waiting at most readyWait
// for each; it returns the readiness and the error of each dependency
// that is down.
func (g *Gate) checkReady(ctx context.Context) (Readiness, map[string]error) {
	checks := map[string]func(context.Context) error{"grants": g.cfg.Grants.Ping}
	for _, p := range g.idps {
		checks["idp "+p.Name] = p.IdP.reachable
	}
	for name, p := range g.cfg.Providers {
		checks["idp "+name] = p.IdP.reachable
	}
	results := make(map[string]chan error, len(checks))
	for name, check := range checks {
		ch := make(chan error, 1)
		results[name] = ch
		go func() { ch <- check(ctx) }()
	}
	timeout := time.NewTimer(readyWait)
	defer timeout.Stop()
	r := Readiness{Status: "ready", IdP: map[string]string{}}
	failed := map[string]error{}
	names := make([]string, 0, len(checks))
	for name := range checks {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		state := "up"
		select {
		case err := <-results[name]:
			if err != nil {
				state, failed[name] = "down", err
			}
		case <-timeout.C:
			state, failed[name] = "timeout", context.DeadlineExceeded
		}
		if name == "grants" {
			r.Grants = state
		} else {
			r.IdP[name[len("idp "):]] = state
		}
		if state != "up" {
			r.Status = "not_ready"
		}
	}
	if !g.cfg.Grants.Ready() && r.Grants == "up" {
		// The node has not loaded its mirror of revocations yet.
		r.Grants, r.Status = "loading", "not_ready"
	}
	if e := g.cfg.Policy; e != nil {
		st := e.Stats()
		r.Policy = &PolicyReadiness{Revision: st.Revision, ReloadFailing: st.Failing}
	}
	return r, failed
}

// reachable is the IdP's readiness: its discovery document was read and
// it answered recently.
func (idp IdP) reachable(ctx context.Context) error {
	if _, err := idp.Discovery.Get(ctx); err != nil {
		return err
	}
	return idp.Discovery.Reachable(ctx)
}

// logChanges logs a dependency going down (with its error) or coming
// back, once per change rather than once per probe. rd.mu is held.
func (g *Gate) logChanges(failed map[string]error) {
	rd := &g.ready
	if rd.down == nil {
		rd.down = map[string]bool{}
	}
	for name, err := range failed {
		if !rd.down[name] {
			g.log.Warn("not ready: a dependency is down", zap.String("app", g.cfg.App), zap.String("dependency", name), zap.Error(err))
			rd.down[name] = true
		}
	}
	for name := range rd.down {
		if failed[name] == nil {
			g.log.Info("ready: a dependency is back", zap.String("app", g.cfg.App), zap.String("dependency", name))
			delete(rd.down, name)
		}
	}
}
