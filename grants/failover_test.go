package grants

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

// topology is a replicated Redis the failover tests can break: its URL,
// the master and replica that hold a key, and a way to wait for the
// replica's promotion.
type topology struct {
	url      string
	holders  func(key string) (master, replica *redistest.Server)
	promoted func(old *redistest.Server) bool // waits until another server is master
}

func sentinelTopology(t *testing.T) topology {
	set := redistest.StartSentinel(t, redistest.Options{AppendOnly: true})
	return topology{
		url: set.URL(),
		holders: func(string) (*redistest.Server, *redistest.Server) {
			addr, err := set.MasterAddr(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if addr == set.Master.Addr() {
				return set.Master, set.Replica
			}
			return set.Replica, set.Master
		},
		promoted: func(old *redistest.Server) bool {
			_, ok := set.WaitFailover(old.Addr(), 30*time.Second)
			return ok
		},
	}
}

func clusterTopology(t *testing.T) topology {
	c := redistest.StartCluster(t, 3, 1, redistest.Options{AppendOnly: true})
	var key string
	return topology{
		url: c.URL(),
		holders: func(k string) (*redistest.Server, *redistest.Server) {
			key = k
			m := c.MasterFor(k)
			if m == nil {
				t.Fatalf("no master for %s", k)
			}
			return m, c.ReplicaOf(m)
		},
		promoted: func(old *redistest.Server) bool {
			return redistest.WaitFor(30*time.Second, func() bool {
				m := c.MasterFor(key)
				return m != nil && m != old && c.WaitOK(100*time.Millisecond)
			})
		},
	}
}

// TestRevocationsSurviveAFailover reproduces a failover with replication
// lag, for the five kinds of revocation: the replica is paused, the
// revocation is made (the store reports that its replica did not confirm
// it, and every node enforces it from its mirror), the master is killed,
// the replica is resumed and promoted without it. The revoked thing must
// stay revoked on every node, be written back to the new master by the
// nodes' mirrors, and be known to a node started afterwards.
func TestRevocationsSurviveAFailover(t *testing.T) {
	for name, open := range map[string]func(*testing.T) topology{"sentinel": sentinelTopology, "cluster": clusterTopology} {
		for _, kind := range []string{"grant revocation", "session revocation", "logout everywhere", "de-provisioning", "back-channel logout"} {
			t.Run(name+"/"+kind, func(t *testing.T) {
				t.Parallel()
				revocationSurvivesFailover(t, open(t), kind)
			})
		}
	}
}

func revocationSurvivesFailover(t *testing.T, topo topology, kind string) {
	ctx := context.Background()
	open := func() *RedisStore {
		// A generous WAIT bound: the healthy replica below must confirm in
		// time on a loaded 2-core machine running 8 topologies at once.
		s, err := OpenRedis(topo.url, RedisOptions{Timeout: 500 * time.Millisecond, DurableWait: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	op := open() // the operator's CLI
	now := time.Now()
	bob := User{Iss: "https://idp.example", Sub: "bob-" + kind}
	g, err := op.AddGrant(ctx, Grant{User: bob, Email: "bob@example.com", Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	// A revocation confirmed by the replica, before anything breaks: no
	// error (WAIT saw it).
	if err := op.RevokeSession(ctx, bob, "earlier", now.Add(time.Hour)); err != nil {
		t.Fatalf("a revocation with a healthy replica: %v", err)
	}
	nodes := []*Cache{NewCache(open(), time.Second), NewCache(open(), time.Second)}
	for _, n := range nodes {
		t.Cleanup(func() { _ = n.Close() })
	}
	sid := "sid-1"
	created := now.Add(-time.Minute).Unix()
	ended := IdPSession{Iss: bob.Iss, SID: "idp-" + kind}
	revoked := func(c *Cache) (bool, error) {
		st, err := c.Lookup(ctx, bob, sid, time.Now())
		switch kind {
		case "grant revocation":
			return len(st.Grants) == 0, err
		case "back-channel logout":
			return c.IdPSessionRevoked(ended.Key()), err
		default:
			return st.Revoked(created), err
		}
	}
	for i, n := range nodes {
		if r, err := revoked(n); r || err != nil {
			t.Fatalf("node %d before: revoked %v, %v", i, r, err)
		}
	}

	// The replica has the grant, then stops reading; the revocation is
	// made.
	// The key the revocation is written to, and a hash tag of its slot.
	key, tag := kGrants(bob.Key()), "{"+bob.Key()+"}"
	if kind == "back-channel logout" {
		key, tag = kIdPSession(ended.Key()), "{"+ended.Key()+"}"
	}
	master, replica := topo.holders(key)
	if replica == nil {
		t.Fatal("no replica")
	}
	if !redistest.WaitFor(10*time.Second, func() bool { return redistest.InSync(master, replica) }) {
		t.Fatal("the replica did not catch up with the master within 10s")
	}
	replica.Pause()
	t.Cleanup(replica.Resume)
	// Fill the replication link (the kernel's socket buffers), so that
	// what the master writes next waits in its own output buffer, and dies
	// with it.
	mc := master.Client()
	junk := strings.Repeat("x", 8<<20)
	for i := range 3 {
		if err := mc.Set(ctx, fmt.Sprintf("gh:%s:junk%d", tag, i), junk, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	mc.Close()
	var opErr error
	switch kind {
	case "grant revocation":
		_, opErr = op.RevokeGrant(ctx, g.ID, "ops", now)
	case "session revocation":
		opErr = op.RevokeSession(ctx, bob, sid, now.Add(time.Hour))
	case "logout everywhere":
		opErr = op.RevokeUser(ctx, bob, now)
	case "back-channel logout":
		opErr = op.RevokeIdPSession(ctx, ended, now.Add(time.Hour))
	case "de-provisioning":
		var done Deprovisioned
		done, opErr = Deprovision(ctx, op, bob, "hr", now)
		if !done.SessionsRevoked || len(done.Grants) != 1 {
			t.Errorf("de-provisioning did %+v", done)
		}
	}
	if !errors.Is(opErr, ErrNotDurable) {
		t.Fatalf("with the replica paused, the revocation reported %v; want ErrNotDurable (never an acknowledgement)", opErr)
	}
	// Every node enforces it (its event reached the mirrors).
	for i, n := range nodes {
		if !redistest.WaitFor(5*time.Second, func() bool { r, _ := revoked(n); return r }) {
			t.Fatalf("node %d does not enforce the revocation", i)
		}
	}

	// The master dies; the replica, which never got the revocation, is
	// promoted.
	master.Kill()
	replica.Resume()
	start := time.Now()
	if !topo.promoted(master) {
		t.Fatal("no failover within 30s")
	}
	t.Logf("%s: replica promoted %s after the master was killed", kind, time.Since(start).Round(10*time.Millisecond))
	// Enforced on every node once they read the new master (which lacks
	// the revocation), and written back to it by the nodes' mirrors.
	for i, n := range nodes {
		var err error
		if !redistest.WaitFor(20*time.Second, func() bool { _, err = n.Lookup(ctx, bob, sid, time.Now()); return err == nil }) {
			t.Fatalf("node %d cannot read the new master: %v", i, err)
		}
		if r, _ := revoked(n); !r {
			t.Errorf("node %d let the revoked %s back after the failover", i, kind)
		}
	}
	fresh := open()
	backIn := func() bool {
		st, err := fresh.Lookup(ctx, bob, sid, time.Now())
		if err != nil {
			return false
		}
		if kind == "back-channel logout" {
			rv, err := fresh.Revocations(ctx, time.Now())
			return err == nil && rv.IdPSessions[ended.Key()] != 0
		}
		if kind == "grant revocation" || kind == "de-provisioning" {
			// The grant is there, and revoked: not merely missing.
			gs, err := fresh.Grants(ctx, GrantFilter{User: &bob, All: true})
			if err != nil || len(gs) != 1 || gs[0].ID != g.ID || gs[0].RevokedAt == 0 || len(st.Grants) != 0 {
				return false
			}
		}
		return kind == "grant revocation" || st.Revoked(created)
	}
	if !redistest.WaitFor(40*time.Second, backIn) {
		t.Fatalf("the new master never got the revocation back")
	}
	t.Logf("%s: written back to the new master %s after the kill", kind, time.Since(start).Round(10*time.Millisecond))
	// A node started afterwards knows it before it serves.
	late := NewCache(open(), time.Second)
	t.Cleanup(func() { _ = late.Close() })
	if !redistest.WaitFor(10*time.Second, late.Ready) {
		t.Fatal("a new node did not load the revocations")
	}
	if r, err := revoked(late); !r {
		t.Errorf("a node started after the failover does not enforce it (%v)", err)
	}
}
