package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

// TestFailoverUnderLoad runs the fault harness's mixed load on two nodes
// whose grant store is a replicated Redis, and kills the master that holds
// the contractor's grant: a Sentinel set and a Cluster. Throughout: no
// request past its bound, nothing allowed that should be denied (a JIT
// answer is 503 while the store cannot be read, never a 403 for a grant
// held nor a 200 without one), and JIT access comes back by itself once a
// replica is promoted, with every grant and request kept.
func TestFailoverUnderLoad(t *testing.T) {
	for _, topo := range []string{"sentinel", "cluster"} {
		t.Run(topo, func(t *testing.T) { failoverUnderLoad(t, topo) })
	}
}

func failoverUnderLoad(t *testing.T, topo string) {
	var url string
	var master func(issuer string) *redistest.Server
	switch topo {
	case "sentinel":
		set := redistest.StartSentinel(t, redistest.Options{AppendOnly: true})
		url = set.URL()
		master = func(string) *redistest.Server { return set.Master }
	case "cluster":
		c := redistest.StartCluster(t, 3, 1, redistest.Options{AppendOnly: true})
		url = c.URL()
		master = func(issuer string) *redistest.Server {
			// The master of dave's grants (the store's key layout).
			sum := sha256.Sum256([]byte(issuer + "\x00dave"))
			return c.MasterFor("gh:{" + hex.EncodeToString(sum[:16]) + "}:g")
		}
	}
	e := startJITWithStore(t, nil, url, "", "", "")
	fl := newFaultLoad(t, e)
	victim := master(e.idp.Issuer)
	var killedAt atomic.Int64 // elapsed nanoseconds
	res := runLoad(fl.roots, fl.jobs(503), 6, 200000, 12*time.Second, faultBound, func(el time.Duration) {
		if el > 1500*time.Millisecond && killedAt.Load() == 0 {
			victim.Kill()
			killedAt.Store(int64(el))
		}
	})
	if killedAt.Load() == 0 {
		t.Fatalf("the load ended before the master was killed (%s)", res)
	}
	res.check(t, topo+": master killed under load")
	kill := time.Duration(killedAt.Load())
	span, ok := res.spans["contractor with a grant"][503]
	if !ok {
		t.Fatalf("the contractor's JIT access never failed closed: the kill did not reach the store (%v)", res.statuses)
	}
	if last := res.spans["contractor with a grant"][200]; last[1] < span[1] {
		t.Errorf("JIT access did not come back within the run: last 200 at %s, last 503 at %s", last[1], span[1])
	}
	t.Logf("%s: master killed at %s; the contractor's JIT answers were 503 from +%s to +%s after the kill (%d of them), then 200 again",
		topo, kill.Round(time.Millisecond), (span[0] - kill).Round(time.Millisecond), (span[1] - kill).Round(time.Millisecond),
		res.statuses["contractor with a grant"][503])
	fl.recovered(t, topo+" failover")
}
