package gate

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/grants"
)

// pingStore is a memory store that can be made unreachable.
type pingStore struct {
	grants.Store
	down  atomic.Bool
	pings atomic.Int32
}

func (s *pingStore) Ping(context.Context) error {
	s.pings.Add(1)
	if s.down.Load() {
		return errors.New("dial tcp 10.0.0.7:6379: connection refused")
	}
	return nil
}

// TestReadyz: readiness follows the IdP and the grant store, answers
// from its last check for a second (probes cannot become load on them),
// names no address or error, and neither probe is audited.
func TestReadyz(t *testing.T) {
	store := &pingStore{Store: grants.NewMemory()}
	tg := newTestGate(t, func(c *Config) {
		c.IdP.Discovery.Now = c.Now
		c.Grants = grants.NewCache(store, 50*time.Millisecond)
	})
	t.Cleanup(func() { _ = tg.cfg.Grants.Close() })
	ready := func(what string, status int) Readiness {
		t.Helper()
		out := tg.handle(request(http.MethodGet, "/.gatehouse/readyz", false))
		want(t, what, out, Page, status, ResultInternal, ReasonReadyz)
		if !out.Quiet {
			t.Errorf("%s: a readiness probe is audited", what)
		}
		var r Readiness
		if err := json.Unmarshal(out.Body, &r); err != nil {
			t.Fatalf("%s: %v: %s", what, err, out.Body)
		}
		if got := string(out.Body); json.Valid(out.Body) && (strings.Contains(got, "10.0.0.7") || strings.Contains(got, "refused")) {
			t.Errorf("%s: readyz tells an address or an error: %s", what, got)
		}
		return r
	}
	r := ready("all up", http.StatusOK)
	if r.Status != "ready" || r.IdP["primary"] != "up" || r.Grants != "up" || r.Policy != nil {
		t.Errorf("all up: %+v", r)
	}
	pings := store.pings.Load()
	for range 20 {
		ready("probed again at once", http.StatusOK)
	}
	if store.pings.Load() != pings {
		t.Errorf("20 probes within a second pinged the store %d more times", store.pings.Load()-pings)
	}

	store.down.Store(true)
	tg.clock.add(2 * time.Second)
	r = ready("store down", http.StatusServiceUnavailable)
	if r.Status != "not_ready" || r.Grants != "down" || r.IdP["primary"] != "up" {
		t.Errorf("store down: %+v", r)
	}
	if n := tg.logs.FilterMessage("not ready: a dependency is down").Len(); n != 1 {
		t.Errorf("%d log lines for the store going down, want 1", n)
	}
	tg.clock.add(2 * time.Second)
	ready("still down", http.StatusServiceUnavailable)
	if n := tg.logs.FilterMessage("not ready: a dependency is down").Len(); n != 1 {
		t.Errorf("a dependency still down is logged again (%d lines)", n)
	}

	store.down.Store(false)
	tg.idp.Close()
	tg.clock.add(3 * time.Second)
	r = ready("IdP down", http.StatusServiceUnavailable)
	if r.IdP["primary"] != "down" || r.Grants != "up" {
		t.Errorf("IdP down: %+v", r)
	}
	if tg.logs.FilterMessage("ready: a dependency is back").Len() != 1 {
		t.Error("the store coming back is not logged")
	}

	// HEAD answers the status alone; healthz is quiet and asks nothing.
	head := tg.handle(request(http.MethodHead, "/.gatehouse/readyz", false))
	if head.Status != http.StatusServiceUnavailable || len(head.Body) != 0 {
		t.Errorf("HEAD readyz: %d %q", head.Status, head.Body)
	}
	health := tg.handle(request(http.MethodGet, "/.gatehouse/healthz", false))
	want(t, "healthz with the IdP down", health, Page, http.StatusOK, ResultInternal, ReasonHealthz)
	if !health.Quiet {
		t.Error("a liveness probe is audited")
	}
}
