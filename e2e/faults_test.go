package e2e

import (
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// slowProxy is a TCP proxy on loopback that delays every chunk Redis
// sends back by a settable amount: a slow Redis.
type slowProxy struct {
	ln    net.Listener
	delay atomic.Int64 // nanoseconds
}

func startSlowProxy(t *testing.T, target string) *slowProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	return p
}

func (p *slowProxy) serve(c net.Conn, target string) {
	defer c.Close()
	r, err := net.DialTimeout("tcp", target, time.Second)
	if err != nil {
		return
	}
	defer r.Close()
	go func() { _, _ = io.Copy(r, c) }()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if info.IsDir() {
			if info.Name() == "testdata" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !strings.HasSuffix(p, ".rego") && !strings.HasSuffix(p, ".json") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// faultLoad is the mixed load of the fault tests, on two nodes: staff
// (standing access), a contractor with a grant, one without (with a
// pending request), a de-provisioned user and no session; and a snapshot
// of every grant and request, which no fault may change.
type faultLoad struct {
	roots    *x509.CertPool
	jobs     func(jit ...int) []loadJob
	snapshot func() string
	before   string
}

func newFaultLoad(t *testing.T, e *jitEnv) *faultLoad {
	nodes := []*gatehouse{e.ghA, e.ghB}
	alice := sessionFor(t, nodes, e.nodeA, "alice")
	dave := sessionFor(t, nodes, e.nodeB, "dave")
	e.cli(t, "grants", "add", "--sub", "dave", "--iss", e.idp.Issuer, "--resource", "projects-app", "--duration", "2h", "--reason", "faults")
	erin := sessionFor(t, nodes, e.nodeA, "erin")
	e.cli(t, "users", "deprovision", "--sub", "erin", "--iss", e.idp.Issuer, "--reason", "faults")
	// bob asks for access: a pending request that must survive.
	bobB := newBrowser(t, nodes...)
	deny := bobB.login(e.nodeA+"/work/1", "bob")
	v := form(deny)
	v.Set("reason", "must survive the faults")
	v.Set("duration", "1h")
	if resp := bobB.post(e.nodeA+"/.gatehouse/request", v, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("bob's request: %d", resp.StatusCode)
	}
	bob := "__Host-gatehouse=" + bobB.cookie(e.nodeA, "__Host-gatehouse").Value
	fl := &faultLoad{roots: mergedRoots(nodes...)}
	fl.snapshot = func() string {
		var ids []string
		for _, g := range e.grants(t, "--all") {
			ids = append(ids, "grant:"+g.ID)
		}
		for _, r := range e.requests(t) {
			ids = append(ids, "request:"+r.ID+":"+r.Status)
		}
		sort.Strings(ids)
		return strings.Join(ids, ",")
	}
	fl.before = fl.snapshot()
	node := func(i int) string {
		if i%2 == 0 {
			return e.nodeA
		}
		return e.nodeB
	}
	as := func(cookie string) http.Header {
		h := http.Header{"Accept": {"application/json"}}
		if cookie != "" {
			h.Set("Cookie", cookie)
		}
		return h
	}
	// During a fault a JIT answer may be 503 (the store cannot be read);
	// never a 200 for what must be denied, nor a 403 for a grant held.
	fl.jobs = func(jit ...int) []loadJob {
		return []loadJob{
			{"staff", "GET", func(i int) string { return fmt.Sprintf("%s/work/%d", node(i), i) }, as(alice), statuses(200)},
			{"contractor with a grant", "GET", func(i int) string { return node(i) + "/work/1" }, as(dave), statuses(append([]int{200}, jit...)...)},
			{"contractor without a grant", "GET", func(i int) string { return node(i) + "/work/1" }, as(bob), statuses(append([]int{403}, jit...)...)},
			{"de-provisioned", "GET", func(i int) string { return node(i) + "/work/1" }, as(erin), statuses(401)},
			{"no session", "GET", func(i int) string { return node(i) + "/work/1" }, as(""), statuses(401)},
		}
	}
	return fl
}

// faultBound is how long any request may take, whatever is broken.
const faultBound = time.Second

// recovered checks that service is back as before the fault (allowing a
// moment for caches and reconnections), and that no grant or request
// changed.
func (fl *faultLoad) recovered(t *testing.T, what string) {
	t.Helper()
	res := runLoad(fl.roots, fl.jobs(), 4, 400, 5*time.Second, faultBound, nil)
	if len(res.violations) > 0 {
		eventually(10*time.Second, func() bool {
			res = runLoad(fl.roots, fl.jobs(), 4, 200, 5*time.Second, faultBound, nil)
			return len(res.violations) == 0
		})
	}
	res.check(t, what+": recovered")
	if got := fl.snapshot(); got != fl.before {
		t.Errorf("%s: grants or requests changed:\n before %s\n after  %s", what, fl.before, got)
	}
}

// TestFaults puts two nodes under load and breaks what they depend on:
// Redis (stopped, slowed, restarted), the policy (garbage on disk), the
// config (reloads) and the IdP (stopped during logins). In each: no
// request hangs past its bound, nothing that should be denied is allowed,
// no grant or request is lost, and service recovers by itself.
func TestFaults(t *testing.T) {
	policyDir := t.TempDir()
	copyDir(t, "../policies", policyDir)
	e := startJITWithProxy(t, policyDir)
	fl := newFaultLoad(t, e)
	roots, jobs, recovered, bound := fl.roots, fl.jobs, fl.recovered, faultBound
	nodes := []*gatehouse{e.ghA, e.ghB}

	t.Run("Redis stopped", func(t *testing.T) {
		var stopped, started atomic.Bool
		res := runLoad(roots, jobs(503), 6, 100000, 6*time.Second, bound, func(el time.Duration) {
			if el > 1500*time.Millisecond && !stopped.Swap(true) {
				e.redis.Stop()
			}
			if el > 3500*time.Millisecond && !started.Swap(true) {
				e.redis.Start()
			}
		})
		if !stopped.Load() || !started.Load() {
			t.Fatalf("the load ended before Redis was stopped and started (%s)", res)
		}
		res.check(t, "Redis stopped for 2s under load")
		recovered(t, "Redis stopped")
	})

	t.Run("Redis slowed", func(t *testing.T) {
		var slowed atomic.Bool
		res := runLoad(roots, jobs(503), 6, 100000, 6*time.Second, bound, func(el time.Duration) {
			switch {
			case el > 1500*time.Millisecond && el < 3500*time.Millisecond:
				slowed.Store(true)
				e.proxy.delay.Store(int64(300 * time.Millisecond))
			default:
				e.proxy.delay.Store(0)
			}
		})
		e.proxy.delay.Store(0)
		if !slowed.Load() {
			t.Fatalf("the load ended before Redis was slowed (%s)", res)
		}
		res.check(t, "Redis answering 300ms late for 2s under load")
		recovered(t, "Redis slowed")
	})

	t.Run("Redis restarted", func(t *testing.T) {
		var done atomic.Bool
		res := runLoad(roots, jobs(503), 6, 100000, 5*time.Second, bound, func(el time.Duration) {
			if el > 1500*time.Millisecond && !done.Swap(true) {
				e.redis.Stop()
				e.redis.Start()
			}
		})
		if !done.Load() {
			t.Fatalf("the load ended before Redis was restarted (%s)", res)
		}
		res.check(t, "Redis restarted under load")
		recovered(t, "Redis restarted")
	})

	t.Run("policy replaced by garbage", func(t *testing.T) {
		path := filepath.Join(policyDir, "gatehouse", "decision.rego")
		good := mustRead(t, path)
		var broke, fixed atomic.Bool
		res := runLoad(roots, jobs(), 6, 100000, 6*time.Second, bound, func(el time.Duration) {
			if el > 1500*time.Millisecond && !broke.Swap(true) {
				writeAtomically(t, path, "package gatehouse\n\ndecision := {{{ garbage\n")
			}
			if el > 4000*time.Millisecond && !fixed.Swap(true) {
				writeAtomically(t, path, good)
			}
		})
		if !broke.Load() || !fixed.Load() {
			t.Fatalf("the load ended before the policy was broken and mended (%s)", res)
		}
		res.check(t, "policy garbage under load")
		if !strings.Contains(e.ghA.log.String(), "policy change refused") || !strings.Contains(e.ghB.log.String(), "policy change refused") {
			t.Error("a node did not log the refused policy")
		}
		recovered(t, "policy garbage")
	})

	t.Run("config reload", func(t *testing.T) {
		var n atomic.Int32
		res := runLoad(roots, jobs(), 6, 100000, 6*time.Second, bound, func(el time.Duration) {
			if el > time.Duration(1000+1500*n.Load())*time.Millisecond && n.Load() < 3 {
				n.Add(1)
				e.ghA.reload(t)
			}
		})
		if n.Load() != 3 {
			t.Fatalf("%d config reloads during the load, want 3 (%s)", n.Load(), res)
		}
		res.check(t, fmt.Sprintf("%d config reloads of node A under load", n.Load()))
		recovered(t, "config reload")
	})

	t.Run("IdP stopped during logins", func(t *testing.T) {
		// A login in progress, stopped at its callback.
		pending := newBrowser(t, nodes...)
		cb := loginUntilCallbackURL(t, pending, e.nodeA+"/work/9", "carol")
		port := mustParse(e.idp.Issuer).Port()
		e.idp.stop()
		time.Sleep(2500 * time.Millisecond) // past the last good contact
		// Existing sessions keep working.
		res := runLoad(roots, jobs(), 4, 400, 3*time.Second, bound, nil)
		res.check(t, "IdP down, existing sessions")
		// The login in progress and new logins get a clear 502 page.
		p := pending.navigate(cb)
		if p.StatusCode != http.StatusBadGateway || !strings.Contains(p.Body, "sign-in service cannot be reached") {
			t.Errorf("the callback with the IdP down: %d\n%s", p.StatusCode, p.Body)
		}
		start := time.Now()
		p = newBrowser(t, nodes...).navigate(e.nodeB + "/work/1")
		if p.StatusCode != http.StatusBadGateway || !strings.Contains(p.Body, "Sign-in is unavailable") {
			t.Errorf("a new login with the IdP down: %d\n%s", p.StatusCode, p.Body)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("the 502 took %s", took)
		}
		// The IdP comes back (same address, new keys): logins work again,
		// at the latest once the key set may be fetched again (10 s after
		// the last fetch).
		e.idp = startIdPWith(t, []string{"IDP_PORT=" + port}, idpClient{ClientID: "jit", ClientSecret: "jit-secret",
			RedirectURIs:           []string{e.nodeA + "/.gatehouse/callback", e.nodeB + "/.gatehouse/callback"},
			PostLogoutRedirectURIs: []string{e.nodeA + "/.gatehouse/logout", e.nodeB + "/.gatehouse/logout"}})
		if !eventually(20*time.Second, func() bool {
			return newBrowser(t, nodes...).login(e.nodeB+"/work/2", "alice").StatusCode == http.StatusOK
		}) {
			t.Fatal("logins did not recover after the IdP came back")
		}
	})
}

// startJITWithProxy starts the two nodes with their grant store behind a
// slow proxy, and the policy from policyDir.
func startJITWithProxy(t *testing.T, policyDir string) *jitEnv {
	// The proxy needs Redis's port before the nodes start; startJITWith
	// starts Redis, so build the proxy on a reserved address.
	r := startRedis(t)
	proxy := startSlowProxy(t, r.Addr())
	e := startJITWithRedis(t, r, "", strings.Replace(r.URL(), r.Addr(), proxy.ln.Addr().String(), 1), policyDir)
	e.proxy = proxy
	return e
}
