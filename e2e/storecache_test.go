package e2e

import (
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

// TestStoreOffTheHotPath runs two nodes whose Redis connections go
// through a proxy that can stall their subscriptions to gh:events
// silently. Warm requests read nothing from Redis; with the subscriptions
// stalled, a revocation made elsewhere still lands on both nodes within a
// second; and with Redis down, standing access answers without waiting
// for the store.
func TestStoreOffTheHotPath(t *testing.T) {
	r := startRedis(t)
	proxy := redistest.StartProxy(t, r.Addr())
	e := startJITWithRedis(t, r, "", strings.Replace(r.URL(), r.Addr(), proxy.Addr(), 1), "")
	A, B := e.nodeA, e.nodeB
	dave := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, dave.login(A+"/work/1", "dave"), http.StatusForbidden)
	e.cli(t, "grants", "add", "--sub", "dave", "--iss", e.idp.Issuer, "--resource", "projects-app", "--duration", "1h", "--reason", "e2e")
	waitStatus(t, dave, A+"/work/1", http.StatusOK, 2*time.Second)
	waitStatus(t, dave, B+"/work/1", http.StatusOK, 2*time.Second)

	t.Run("warm requests read nothing from the store", func(t *testing.T) {
		lookups := func() float64 {
			return scrape(t, e.ghA).sum("gatehouse_grant_store_calls_total", `op="lookup"`)
		}
		mustStatus(t, dave.fetch(http.MethodGet, A+"/work/2"), http.StatusOK)
		before := lookups()
		for range 40 { // 4 s: an entry lasted 1 s before, 4 reads
			mustStatus(t, dave.fetch(http.MethodGet, A+"/work/2"), http.StatusOK)
			time.Sleep(100 * time.Millisecond)
		}
		// 0 here; one allowed for a machine so busy that a heartbeat came
		// back over a second late (the node then reads again, rightly).
		if n := lookups() - before; n > 1 {
			t.Fatalf("40 requests over 4s read the store %v times, want 0", n)
		}
		t.Logf("40 requests over 4s read the store %v times", lookups()-before)
		if v := scrape(t, e.ghA).value("gatehouse_grant_store_events_live"); v != 1 {
			t.Errorf("gatehouse_grant_store_events_live is %v while the node hears its heartbeats", v)
		}
	})

	t.Run("stalled subscriptions: a revocation still lands within a second", func(t *testing.T) {
		proxy.StallSubscriptions(true)
		defer proxy.StallSubscriptions(false)
		if proxy.Subscriptions() < 2 {
			t.Fatalf("the proxy sees %d subscriptions, want one per node", proxy.Subscriptions())
		}
		id := e.grants(t, "--sub", "dave", "--iss", e.idp.Issuer)[0].ID
		start := time.Now()
		e.cli(t, "grants", "revoke", "--id", id, "--reason", "stall test")
		cli := time.Since(start)
		took := map[string]time.Duration{}
		for len(took) < 2 && time.Since(start) < 5*time.Second {
			for _, node := range []string{A, B} {
				if _, done := took[node]; !done && dave.fetch(http.MethodGet, node+"/work/1").StatusCode == http.StatusForbidden {
					took[node] = time.Since(start)
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("grant revoked by the CLI (which took %s) with both nodes' subscriptions stalled: refused on node A after %s, node B after %s",
			cli.Round(time.Millisecond), took[A].Round(time.Millisecond), took[B].Round(time.Millisecond))
		if !eventually(3*time.Second, func() bool { return scrape(t, e.ghA).value("gatehouse_grant_store_events_live") == 0 }) {
			t.Error("gatehouse_grant_store_events_live is still 1 three seconds into the stall")
		}
		for _, node := range []string{A, B} {
			// The bound is a second from the revocation; the CLI's own
			// start-up (a process, a Redis connection) is in the figure.
			if d, ok := took[node]; !ok || d-cli > time.Second+500*time.Millisecond {
				t.Errorf("%s: the revocation landed after %s (CLI %s), want within 1s of it", node, d, cli)
			}
		}
	})

	t.Run("Redis not answering: standing access does not wait for the store", func(t *testing.T) {
		alice := newBrowser(t, e.ghA, e.ghB)
		mustStatus(t, alice.login(B+"/work/3", "alice"), http.StatusOK)
		timed := func(n int) []time.Duration {
			var ds []time.Duration
			for i := range n {
				// A distinct path each time: every request misses the
				// decision cache alike before and during the outage.
				start := time.Now()
				mustStatus(t, alice.fetch(http.MethodGet, B+"/work/"+strings.Repeat("x", i%7+1)), http.StatusOK)
				ds = append(ds, time.Since(start))
				time.Sleep(15 * time.Millisecond) // past the cache entry's second, over the run
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			return ds
		}
		before := timed(100)
		// Every connection to Redis hangs (a stopped Redis would refuse
		// at once, and cost nothing to wait for): each read waits the
		// 50 ms grants_timeout until reads failing in a row open the
		// circuit.
		proxy.StallAll(true)
		defer proxy.StallAll(false)
		waitStatus(t, dave, B+"/work/1", http.StatusServiceUnavailable, 5*time.Second)
		if !eventually(5*time.Second, func() bool {
			dave.fetch(http.MethodGet, B+"/work/1")
			return scrape(t, e.ghB).value("gatehouse_grant_store_circuit_open") == 1
		}) {
			t.Fatal("gatehouse_grant_store_circuit_open is not 1 five seconds into the outage")
		}
		during := timed(100)
		p99 := func(ds []time.Duration) time.Duration { return ds[len(ds)*99/100-1] }
		t.Logf("alice (standing access) on node B, 100 requests: p50 %s p99 %s with Redis answering; p50 %s p99 %s with Redis not answering",
			before[50].Round(10*time.Microsecond), p99(before).Round(10*time.Microsecond), during[50].Round(10*time.Microsecond), p99(during).Round(10*time.Microsecond))
		// grants_timeout is 50 ms: a request that waited for the store
		// would take at least that, once a second (its entry's TTL).
		if during[50] >= 50*time.Millisecond || p99(during) > p99(before)+40*time.Millisecond {
			t.Errorf("with Redis not answering, standing access takes p50 %s, p99 %s (p99 %s before): it waits for the store", during[50], p99(during), p99(before))
		}
		proxy.StallAll(false)
		waitStatus(t, dave, B+"/work/1", http.StatusForbidden, 5*time.Second) // his grant was revoked above: back to the offer
	})
}
