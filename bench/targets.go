package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// The bench's Gatehouse: app "projects" of the policy library, as in
// caddyfile-examples/contractor-jit.Caddyfile. The issuer is never
// contacted: every request carries a valid session.
const (
	benchApp    = "projects"
	benchIssuer = "https://idp.invalid/realms/bench"
	benchClient = "bench"
	mfa         = "urn:gatehouse:loa:mfa"
)

// A target is one way of serving the same upstream.
type target struct {
	name      string
	store     string // "", "file" or "redis"
	stepUp    bool
	plain     bool
	noCache   bool // policy_cache off
	shadow    bool // policy_shadow: a copy of the policy decided beside it
	accessLog bool // plain Caddy with an access log
	noRate    bool // left out of the fixed-rate runs
	slug      string
	admin     string // Caddy's admin address, with BENCH_PPROF
	script    string
	reqs      []request // what the load sends, cycled at random
	proc      *process
	redis     *process
	up        *process // the upstream
	rss       int64    // peak resident memory of the serving process, KiB

	throughput, p50, p99, cpu series
	gatewayBusy, loadBusy     series       // % of the gateway's CPU, % of the load's CPUs
	rates                     []rateResult // one per fixed rate, in config order
	cacheHits, decisions      int
	doubtfulRuns              int // runs whose figures were not the gateway's alone
	warmHits, warmDecisions   int
}

// rateResult is a target's latency at one fixed rate, over the runs.
type rateResult struct {
	p50, p99, p999, cpu, genCPU series
	warmP99                     series // the unmeasured warm-up's p99
}

type request struct {
	path, cookie string
}

func plainTarget(c config) *target { return &target{name: "(1) Caddy reverse_proxy", plain: true} }

// accessLogTarget is plain Caddy writing an access log line per request:
// what Gatehouse's audit line is to be compared with.
func accessLogTarget(c config) *target {
	return &target{name: "(1b) Caddy reverse_proxy with an access log", plain: true, accessLog: true, noRate: true}
}

func gatehouseTarget(c config, store string) *target {
	name := "(2) Gatehouse, embedded store"
	if store == "redis" {
		name = "(3) Gatehouse, Redis"
	}
	return &target{name: name, store: store}
}

func noCacheTarget(c config) *target {
	return &target{name: "(2b) Gatehouse, embedded store, policy cache off", store: "file", noCache: true, noRate: true}
}

func shadowTarget(c config) *target {
	return &target{name: "(2s) Gatehouse, embedded store, shadow policy", store: "file", shadow: true}
}

func stepUpTarget(c config) *target {
	return &target{name: "(4) Gatehouse, step-up path", store: "file", stepUp: true}
}

// process is a child process in its own process group.
type process struct {
	cmd  *exec.Cmd
	addr string
	log  string
}

func (p *process) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// cpuTime is the CPU the process has used, user and system.
func (p *process) cpuTime() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on
// every Linux this runs on.
const clockTicks = 100

// peakRSS is the process's high-water resident memory, in KiB.
func (p *process) peakRSS() int64 { return p.statusKiB("VmHWM:") }

// rss is the process's resident memory now, in KiB.
func (p *process) rss() int64 { return p.statusKiB("VmRSS:") }

// statusKiB reads one "<field> <n> kB" line of /proc/<pid>/status.
func (p *process) statusKiB(field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitListening(addr string, p *process) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		if p.cmd.ProcessState != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(p.log)
	return fmt.Errorf("nothing listens on %s after 30s; its log:\n%s", addr, log)
}

// startCaddy runs the gatehouse binary on a Caddyfile, on cpus (empty:
// this process's).
func startCaddy(c config, name, caddyfile, addr, cpus string) (*process, error) {
	dir := filepath.Join(c.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfile), 0o600); err != nil {
		return nil, err
	}
	p := &process{addr: addr, log: filepath.Join(dir, "caddy.log")}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = c.pin.command(cpus, c.bin, "run", "--config", file, "--adapter", "caddyfile")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); logf.Close() }()
	if err := waitListening(addr, p); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// globalOptions: Caddy's log, audit lines included, goes to a file, as a
// production gateway's would.
const globalOptions = `{
	%s
	auto_https off
	persist_config off
	log default {
		output file %s {
			roll_disabled
		}
	}
}
`

// startUpstream is the small app behind every target: a Caddy that
// answers 200 with a short body.
func startUpstream(ctx context.Context, c config) (*process, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	return startCaddy(c, "upstream", fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	log default {
		level WARN
	}
}

http://%s {
	respond "hello from the app" 200
}
`, addr), addr, "")
}

func startRedis(c config, name string) (*process, string, error) {
	addr, err := freePort()
	if err != nil {
		return nil, "", err
	}
	host, port, _ := net.SplitHostPort(addr)
	dir := filepath.Join(c.work, name+"-redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	p := &process{addr: addr, log: filepath.Join(dir, "redis.log")}
	p.cmd = exec.Command("redis-server", "--bind", host, "--port", port, "--dir", dir, "--appendonly", "yes",
		"--save", "", "--logfile", p.log, "--daemonize", "no")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, "", err
	}
	go func() { _ = p.cmd.Wait() }()
	if err := waitListening(addr, p); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, "redis://" + addr + "/0", nil
}

// cookieSecret is made per run; it never leaves the machine.
var cookieSecret = func() string {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte('a' + rand.IntN(26))
	}
	return string(b)
}()

func gatehouseCaddyfile(admin, addr, upstream, auditLog, storeURL, policyDir, shadowDir string, grantsTimeout, policyTimeout time.Duration, stepUp, noCache bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, globalOptions, admin, auditLog)
	fmt.Fprintf(&b, `
http://%s {
	gatehouse {
		app %s
		issuer %s
		client_id %s
		cookie_secret %s
		grants %s
		policy %s
		policy_headers X-Projects-Role
		identity_header X-Remote-User email
		identity_header X-Remote-Groups groups
		grants_timeout %s
		policy_timeout %s
`, addr, benchApp, benchIssuer, benchClient, cookieSecret, storeURL, policyDir, grantsTimeout, policyTimeout)
	if noCache {
		b.WriteString("\t\tpolicy_cache off\n")
	}
	if shadowDir != "" {
		fmt.Fprintf(&b, "\t\tpolicy_shadow %s\n", shadowDir)
	}
	if stepUp {
		fmt.Fprintf(&b, `		step_up /admin/* {
			acr %s
			max_age 15m
		}
`, mfa)
	}
	fmt.Fprintf(&b, `	}
	reverse_proxy %s
}
`, upstream)
	return b.String()
}

func plainCaddyfile(admin, addr, upstream, accessLog string) string {
	log := ""
	if accessLog != "" {
		log = fmt.Sprintf("\tlog {\n\t\toutput file %s {\n\t\t\troll_disabled\n\t\t}\n\t}\n", accessLog)
	}
	return fmt.Sprintf(`{
	%s
	auto_https off
	persist_config off
	log default {
		level WARN
	}
}

http://%s {
%s	reverse_proxy %s
}
`, admin, addr, log, upstream)
}

// population makes n users' sessions and grants: nine in ten are staff
// (in a few group sets), one in ten a contractor with a grant for the app,
// each grant ending at its own time. With stepUp, every user is staff with
// a fresh MFA sign-in and a grant for projects-admin.
type population struct {
	sessions []string // cookie headers
	grants   []grants.Grant
}

func makePopulation(n int, stepUp bool) (*population, error) { return populate(n, stepUp, false) }

// makeGrantedPopulation is n contractors, each with a grant.
func makeGrantedPopulation(n int) (*population, error) { return populate(n, false, true) }

func populate(n int, stepUp, allGranted bool) (*population, error) {
	sealer, err := authn.NewSealer([][]byte{[]byte(cookieSecret)}, "session", authn.Binding{App: benchApp, Issuer: benchIssuer, ClientID: benchClient}, 13*time.Hour)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	groupSets := [][]string{{"staff"}, {"staff", "engineering"}, {"staff", "vpn", "berlin"}, {"staff", "managers"}}
	p := &population{sessions: make([]string, n)}
	for i := range n {
		s := &authn.Session{ID: fmt.Sprintf("bench-%d", i), Subject: fmt.Sprintf("user-%06d", i), Email: fmt.Sprintf("user%d@example.com", i),
			Name: "Bench User", Groups: groupSets[i%len(groupSets)], Created: now.Unix() - 60, LastSeen: now.Unix() - 5,
			ACR: "urn:gatehouse:loa:pwd", AMR: []string{"pwd"}, AuthTime: now.Unix() - 60}
		g := grants.Grant{User: grants.User{Iss: benchIssuer, Sub: s.Subject}, Email: s.Email, App: benchApp, Reason: "bench",
			CreatedAt: now.Unix(), ExpiresAt: now.Add(2*time.Hour).Unix() + int64(i), ApprovedBy: "manager@example.com"}
		switch {
		case stepUp:
			s.ACR, s.AMR = mfa, []string{"pwd", "otp"}
			g.Resource = "projects-admin"
			p.grants = append(p.grants, g)
		case allGranted || i%10 == 9:
			s.Groups = []string{"contractors"}
			g.Resource = "projects-app"
			p.grants = append(p.grants, g)
		}
		v, err := sealer.Seal("__Host-gatehouse", s)
		if err != nil {
			return nil, err
		}
		p.sessions[i] = "__Host-gatehouse=" + v
	}
	return p, nil
}

// fill writes the population's grants into the store.
func (p *population) fill(ctx context.Context, storeURL string) error {
	s, err := grants.Open(storeURL, 5*time.Second)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, g := range p.grants {
		if _, err := s.AddGrant(ctx, g); err != nil {
			return err
		}
	}
	return nil
}

// fillConcurrently is fill with workers writing at once.
func (p *population) fillConcurrently(ctx context.Context, storeURL string, workers int) error {
	s, err := grants.Open(storeURL, 5*time.Second)
	if err != nil {
		return err
	}
	defer s.Close()
	var next atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(p.grants) {
					return
				}
				if _, err := s.AddGrant(ctx, p.grants[i]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// requests pairs sessions with paths at random: varied users and paths,
// so that no cache looks better than it is.
func (p *population) requests(paths int, stepUp bool, count int, seed uint64) []request {
	r := rand.New(rand.NewPCG(seed, 1))
	prefixes := []string{"/work/", "/docs/"}
	if stepUp {
		prefixes = []string{"/admin/", "/admin/reports/"}
	}
	out := make([]request, count)
	for i := range out {
		out[i] = request{
			cookie: p.sessions[r.IntN(len(p.sessions))],
			path:   fmt.Sprintf("%s%d", prefixes[r.IntN(len(prefixes))], r.IntN(paths)),
		}
	}
	return out
}

// start brings the target up: its store, its population and its Caddy.
func (t *target) start(ctx context.Context, c config, up *process, users int, slug string) (*population, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	// With BENCH_PPROF, Caddy's admin endpoint (and its /debug/pprof/)
	// listens on loopback so that fixed-rate runs can be profiled.
	admin := "admin off"
	if os.Getenv("BENCH_PPROF") != "" {
		if t.admin, err = freePort(); err != nil {
			return nil, err
		}
		admin = "admin " + t.admin
	}
	if t.plain {
		pop, err := makePopulation(users, false)
		if err != nil {
			return nil, err
		}
		accessLog := ""
		if t.accessLog {
			accessLog = filepath.Join(c.work, slug+"-access.log")
		}
		t.proc, err = startCaddy(c, slug, plainCaddyfile(admin, addr, up.addr, accessLog), addr, c.pin.gateway)
		return pop, err
	}
	dir := filepath.Join(c.work, slug)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	storeURL := "file://" + filepath.Join(dir, "grants.db")
	if t.store == "redis" {
		t.redis, storeURL, err = startRedis(c, slug)
		if err != nil {
			return nil, err
		}
	}
	pop, err := makePopulation(users, t.stepUp)
	if err != nil {
		return nil, err
	}
	if err := pop.fill(ctx, storeURL); err != nil {
		return nil, fmt.Errorf("filling the grant store: %w", err)
	}
	shadowDir := ""
	if t.shadow {
		// The same policy, as a candidate: every decision is evaluated
		// twice, the second time off the request path.
		shadowDir = filepath.Join(dir, "shadow-policies")
		if err := os.CopyFS(shadowDir, os.DirFS(filepath.Join(c.repo, "policies"))); err != nil {
			return nil, err
		}
	}
	t.proc, err = startCaddy(c, slug, gatehouseCaddyfile(admin, addr, up.addr, filepath.Join(dir, "audit.log"), storeURL,
		filepath.Join(c.repo, "policies"), shadowDir, c.grantsTimeout, c.policyTimeout, t.stepUp, t.noCache), addr, c.pin.gateway)
	return pop, err
}

func (t *target) stop() {
	t.proc.stop()
	t.redis.stop()
	t.proc, t.redis = nil, nil
}

func slug(name string) string {
	return strings.Trim(strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(name)), "-")
}
