package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// prepare brings the target up, checks it allows every request, and
// warms it up. Every response must be a 2xx: a benchmark of denials is no
// benchmark.
func (t *target) prepare(ctx context.Context, c config, up *process) error {
	t.slug, t.up = slug(t.name), up
	pop, err := t.start(ctx, c, up, c.users, t.slug)
	if err != nil {
		return err
	}
	t.reqs = pop.requests(c.paths, t.stepUp, 20000, 42)
	if err := t.check(); err != nil {
		return err
	}
	t.script = filepath.Join(c.work, t.slug, "requests.lua")
	if err := writeLua(t.script, t.reqs); err != nil {
		return err
	}
	fmt.Printf("%s: warming up…\n", t.name)
	if _, err := runWrk(c, t.script, t.proc.addr, min(2*time.Second, c.duration)); err != nil {
		return err
	}
	// The warm-up stays out of the cache figures.
	if err := t.countAudit(c); err != nil {
		return err
	}
	t.warmDecisions, t.warmHits = t.decisions, t.cacheHits
	return nil
}

// throughputRun is one wrk run. It also records how busy each side's
// CPUs were: the gateway's should be nearly always, the load's not, or
// the load side and not the gateway was the limit.
func (t *target) throughputRun(c config, i int) error {
	profiled := t.profile(c, "wrk", i)
	w := t.watchCPU(c)
	r, err := runWrk(c, t.script, t.proc.addr, c.duration)
	if err != nil {
		return err
	}
	u := w.stop()
	if err := <-profiled; err != nil {
		return fmt.Errorf("profiling: %w", err)
	}
	t.throughput = append(t.throughput, r.rps)
	t.p50 = append(t.p50, r.p50)
	t.p99 = append(t.p99, r.p99)
	t.cpu = append(t.cpu, perRequest(u.gateway, r.requests))
	t.gatewayBusy = append(t.gatewayBusy, u.gatewayBusy())
	t.loadBusy = append(t.loadBusy, u.loadBusy(r.cpu))
	fmt.Printf("%s: run %d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %.0f µs CPU per request, %d errors; %s\n",
		t.name, i+1, r.rps, r.p50, r.p99, t.cpu[len(t.cpu)-1], r.errors, t.describe(u, "wrk", r.cpu))
	if r.errors > 0 {
		return fmt.Errorf("%d requests were not answered 2xx", r.errors)
	}
	return nil
}

// finishThroughput reads the peak memory and the audit log.
func (t *target) finishThroughput(c config) error {
	t.rss = t.proc.peakRSS()
	if t.plain {
		return nil
	}
	if err := t.countAudit(c); err != nil {
		return err
	}
	t.decisions -= t.warmDecisions
	t.cacheHits -= t.warmHits
	return nil
}

func perRequest(cpu time.Duration, requests int) float64 {
	if requests == 0 {
		return 0
	}
	return float64(cpu) / float64(time.Microsecond) / float64(requests)
}

// check sends a sample of the requests once: all must be allowed.
func (t *target) check() error {
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < len(t.reqs) && i < 200; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+t.proc.addr+t.reqs[i].path, nil)
		req.Header.Set("Cookie", t.reqs[i].cookie)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %d %s", t.reqs[i].path, resp.StatusCode, body)
		}
		if len(resp.Header.Values("Set-Cookie")) > 0 {
			return fmt.Errorf("GET %s re-issued the session cookie", t.reqs[i].path)
		}
	}
	return nil
}

// countAudit reads the audit log written so far: decisions, decisions
// from the policy cache, and anything that was not an allow.
func (t *target) countAudit(c config) error {
	if t.plain {
		return nil
	}
	f, err := os.Open(filepath.Join(c.work, t.slug, "audit.log"))
	if err != nil {
		return err
	}
	defer f.Close()
	t.decisions, t.cacheHits = 0, 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"logger":"http.handlers.gatehouse.audit"`)) {
			continue
		}
		t.decisions++
		if bytes.Contains(line, []byte(`"policy_cached":true`)) {
			t.cacheHits++
		}
		if !bytes.Contains(line, []byte(`"result":"allow"`)) {
			return fmt.Errorf("a request was not allowed: %s", line)
		}
	}
	return sc.Err()
}

// writeLua renders every request once; each wrk thread starts at its
// own place in the list.
func writeLua(path string, reqs []request) error {
	var b strings.Builder
	b.WriteString("local raw = {\n")
	for _, r := range reqs {
		fmt.Fprintf(&b, "{%q, %q},\n", r.path, r.cookie)
	}
	b.WriteString(`}
local reqs = {}
local i = 0
local threads = 0
function setup(thread)
	thread:set("id", threads)
	threads = threads + 1
end
function init(args)
	for k, r in ipairs(raw) do
		reqs[k] = wrk.format("GET", r[1], {["Cookie"] = r[2]})
	end
	i = (id or 0) * 7919 % #reqs
end
function request()
	i = i % #reqs + 1
	return reqs[i]
end
`)
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

type wrkResult struct {
	rps, p50, p99 float64 // req/s, ms, ms
	requests      int
	errors        int
	cpu           time.Duration // wrk's own
}

var (
	reRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reCount   = regexp.MustCompile(`(\d+) requests in`)
	reLatency = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	reNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	reSocket  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func runWrk(c config, script, addr string, d time.Duration) (wrkResult, error) {
	var r wrkResult
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", "-t"+strconv.Itoa(c.threads), "-c"+strconv.Itoa(c.conns),
		"-d"+strconv.Itoa(max(1, int(d.Seconds())))+"s", "--timeout", "5s", "--latency", "-s", script, "http://"+addr+"/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return r, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	m := reRPS.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk printed no Requests/sec:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := reCount.FindSubmatch(out); m != nil {
		r.requests, _ = strconv.Atoi(string(m[1]))
	}
	for _, m := range reLatency.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		switch string(m[3]) {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if string(m[1]) == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	if m := reNon2xx.FindSubmatch(out); m != nil {
		n, _ := strconv.Atoi(string(m[1]))
		r.errors += n
	}
	if m := reSocket.FindSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(string(s))
			r.errors += n
		}
	}
	return r, nil
}

// profile saves a CPU profile of the target over a measured run (the
// first of each kind) when BENCH_PPROF names a directory; the channel
// gets the outcome when the profile is written.
func (t *target) profile(c config, kind string, i int) <-chan error {
	done := make(chan error, 1)
	dir := os.Getenv("BENCH_PPROF")
	if dir == "" || t.admin == "" || i > 0 {
		done <- nil
		return done
	}
	go func() {
		secs := max(1, int(c.duration.Seconds())-1)
		client := &http.Client{Timeout: time.Duration(secs)*time.Second + 30*time.Second}
		resp, err := client.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", t.admin, secs))
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("%s from the admin endpoint", resp.Status)
			return
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			done <- err
			return
		}
		f, err := os.Create(filepath.Join(dir, t.slug+"-"+kind+".pprof"))
		if err == nil {
			_, err = io.Copy(f, resp.Body)
			err = errors.Join(err, f.Close())
		}
		done <- err
	}()
	return done
}

// warmUp is the unmeasured load before each fixed-rate run.
const warmUp = 2 * time.Second

// rateRun sends rate requests a second, open loop: each request leaves
// at its scheduled time whatever the others do, and its latency counts
// from then, so a slow answer cannot hide the queue behind it.
func (t *target) rateRun(c config, rate float64, k, i int) error {
	for len(t.rates) <= k {
		t.rates = append(t.rates, rateResult{})
	}
	r := &t.rates[k]
	// Each run starts warm: the target sat idle while the others ran, and
	// in the meantime its grant cache entries (1 s) ran out and, when the
	// minute turned, so did every decision in its cache (now_minute is in
	// the key). The first second at the new rate then evaluates every
	// distinct key at once, which is a cold start, not the steady cost
	// this run measures; its p99 is printed as the warm-up's.
	warm := openLoop(t.proc.addr, t.reqs, rate, warmUp)
	if warm.errs.n() > 0 || len(warm.lat) == 0 {
		return fmt.Errorf("warm-up: %d requests failed or were not answered 2xx (%s)", warm.errs.n(), warm.errs)
	}
	profiled := t.profile(c, fmt.Sprintf("rate%d", k), i)
	w := t.watchCPU(c)
	run := openLoop(t.proc.addr, t.reqs, rate, c.duration)
	u := w.stop()
	if err := <-profiled; err != nil {
		return fmt.Errorf("profiling: %w", err)
	}
	if len(run.lat) == 0 {
		return fmt.Errorf("no answers")
	}
	lat := run.lat
	r.genCPU = append(r.genCPU, perRequest(u.self, len(lat)))
	r.warmP99 = append(r.warmP99, pct(warm.lat, 0.99))
	r.p50 = append(r.p50, pct(lat, 0.50))
	r.p99 = append(r.p99, pct(lat, 0.99))
	r.p999 = append(r.p999, pct(lat, 0.999))
	r.cpu = append(r.cpu, perRequest(u.gateway, len(lat)))
	fmt.Printf("%s at %.0f req/s: run %d: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, %.0f µs CPU per request (the generator: %.0f), %d errors; "+
		"the warm-up's p99 %.2f ms; 99%% of requests left within %.2f ms of when they were due; %s\n",
		t.name, rate, i+1, pct(lat, 0.5), pct(lat, 0.99), pct(lat, 0.999), r.cpu[len(r.cpu)-1], r.genCPU[len(r.genCPU)-1], run.errs.n(),
		pct(warm.lat, 0.99), pct(run.late, 0.99), t.describe(u, "the generator", u.self))
	if run.errs.n() > 0 {
		return fmt.Errorf("%d requests failed or were not answered 2xx (%s)", run.errs.n(), run.errs)
	}
	return nil
}

func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute,
			DisableCompression: true, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
	}
}

// failures counts what the requests that failed got: "status 503",
// "no answer in time", "connection refused"…
type failures struct {
	mu sync.Mutex
	by map[string]int
}

func (f *failures) add(what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.by == nil {
		f.by = map[string]int{}
	}
	f.by[what]++
}

func (f *failures) n() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.by {
		n += c
	}
	return n
}

func (f *failures) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var parts []string
	for what, c := range f.by {
		parts = append(parts, fmt.Sprintf("%s: %d", what, c))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// errorClass names a network error without its addresses, so that
// failures of one kind count together.
func errorClass(err error) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "no answer in time"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return "connection closed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	}
	return "error"
}

// loopResult is what an open-loop run saw: each request's latency in
// milliseconds from when it was due, sorted; how late each one left,
// sorted (the generator's own delay, or every connection busy); and what
// failed.
type loopResult struct {
	lat, late []float64
	errs      *failures
}

// openLoop sends rate requests a second for d. It is light on purpose:
// the generator shares the load's CPUs with the upstream. Requests are
// pre-rendered and written on 64 keep-alive connections; each request is
// due at its scheduled time and waits, counted, when every connection is
// busy. Every request's latency is kept, so the percentiles are exact.
func openLoop(addr string, reqs []request, rate float64, d time.Duration) loopResult {
	const conns = 64
	raw := make([][]byte, len(reqs))
	for i, r := range reqs {
		raw[i] = []byte("GET " + r.path + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: gatehouse-bench\r\nCookie: " + r.cookie + "\r\n\r\n")
	}
	n := int(rate * d.Seconds())
	interval := float64(time.Second) / rate
	lat, late := make([]float64, n), make([]float64, n)
	type job struct {
		i  int
		at time.Time
	}
	jobs := make(chan job, n)
	errs := &failures{}
	var wg sync.WaitGroup
	// A stalled target cannot hold the run past its length and a grace:
	// what is still queued then counts as failed.
	stop := time.Now().Add(d + 15*time.Second)
	for range conns {
		wg.Go(func() {
			var rr *respReader
			for j := range jobs {
				late[j.i] = float64(time.Since(j.at)) / float64(time.Millisecond)
				ok := false
				failure := "the run's time was over"
				for attempt := 0; attempt < 2 && !ok && time.Now().Before(stop); attempt++ {
					if rr == nil {
						c, err := net.DialTimeout("tcp", addr, 5*time.Second)
						if err != nil {
							failure = "connect: " + errorClass(err)
							break
						}
						rr = &respReader{c: c, buf: make([]byte, 64<<10)}
					}
					deadline := time.Now().Add(10 * time.Second)
					if deadline.After(stop) {
						deadline = stop
					}
					_ = rr.c.SetDeadline(deadline)
					if _, err := rr.c.Write(raw[(j.i*7919)%len(raw)]); err != nil {
						failure = "write: " + errorClass(err)
						rr.c.Close()
						rr = nil
						continue
					}
					status, err := rr.read()
					if err != nil {
						failure = "read: " + errorClass(err)
						rr.c.Close()
						rr = nil
						continue
					}
					ok = status/100 == 2
					failure = fmt.Sprintf("status %d", status)
					break
				}
				if !ok {
					errs.add(failure)
				}
				lat[j.i] = float64(time.Since(j.at)) / float64(time.Millisecond)
			}
			if rr != nil {
				rr.c.Close()
			}
		})
	}
	start := time.Now()
	for i := 0; i < n; {
		now := time.Since(start)
		for ; i < n && time.Duration(float64(i)*interval) <= now; i++ {
			jobs <- job{i, start.Add(time.Duration(float64(i) * interval))}
		}
		if i < n {
			time.Sleep(time.Duration(float64(i)*interval) - time.Since(start))
		}
	}
	close(jobs)
	wg.Wait()
	if os.Getenv("BENCH_TIMELINE") != "" {
		// Where the slow answers were: the worst latency per 100 ms.
		step := max(1, int(rate/10))
		for b := 0; b*step < n; b++ {
			worst := 0.0
			for i := b * step; i < min(n, (b+1)*step); i++ {
				worst = max(worst, lat[i])
			}
			if worst > 20 {
				fmt.Printf("  t=%.1fs (%s): worst %.0f ms\n", float64(b)/10, start.Add(time.Duration(b)*100*time.Millisecond).Format("15:04:05.0"), worst)
			}
		}
	}
	sort.Float64s(lat)
	sort.Float64s(late)
	return loopResult{lat, late, errs}
}

// respReader reads HTTP/1.1 responses with a Content-Length, without
// allocating: the generator must cost little next to what it measures.
type respReader struct {
	c          net.Conn
	buf        []byte
	start, end int
}

var (
	crlfcrlf      = []byte("\r\n\r\n")
	contentLength = []byte("\r\ncontent-length:")
)

func (r *respReader) fill() error {
	if r.start > 0 {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	if r.end == len(r.buf) {
		return fmt.Errorf("response header too large")
	}
	n, err := r.c.Read(r.buf[r.end:])
	r.end += n
	if n > 0 {
		return nil
	}
	return err
}

// read consumes one response and returns its status code.
func (r *respReader) read() (int, error) {
	var head int
	for {
		if i := bytes.Index(r.buf[r.start:r.end], crlfcrlf); i >= 0 {
			head = i + 4
			break
		}
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	h := r.buf[r.start : r.start+head]
	if len(h) < 12 || !bytes.HasPrefix(h, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("not an HTTP/1.1 response")
	}
	status := int(h[9]-'0')*100 + int(h[10]-'0')*10 + int(h[11]-'0')
	length := -1
	for i := 0; i+len(contentLength) <= len(h); i++ {
		if h[i] == '\r' && len(h)-i > len(contentLength) && bytes.EqualFold(h[i:i+len(contentLength)], contentLength) {
			j := i + len(contentLength)
			for j < len(h) && h[j] == ' ' {
				j++
			}
			length = 0
			for ; j < len(h) && '0' <= h[j] && h[j] <= '9'; j++ {
				length = length*10 + int(h[j]-'0')
			}
			break
		}
	}
	if length < 0 {
		return 0, fmt.Errorf("a response without Content-Length")
	}
	r.start += head
	avail := r.end - r.start
	if avail >= length {
		r.start += length
		return status, nil
	}
	length -= avail
	// Read the rest of the body, keeping whatever follows it.
	r.start, r.end = 0, 0
	for length > 0 {
		n, err := r.c.Read(r.buf)
		if n > length {
			r.start, r.end = length, n
			return status, nil
		}
		length -= n
		if err != nil && length > 0 {
			return 0, err
		}
	}
	return status, nil
}

func pct(sorted []float64, q float64) float64 {
	return sorted[int(float64(len(sorted)-1)*q)]
}

func printTable(ts []*target, rates []float64) {
	base := ts[0]
	fmt.Println("\n| target | req/s (median) | runs | vs (1) | p50 ms | p99 ms | CPU µs/req | CPU busy: gateway / load | decisions from the policy cache | peak RSS |")
	fmt.Println("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, t := range ts {
		cache := "—"
		if t.decisions > 0 {
			cache = fmt.Sprintf("%.1f%% of %d", 100*float64(t.cacheHits)/float64(t.decisions), t.decisions)
		}
		fmt.Printf("| %s | %.0f | %s | %.2f | %.2f | %.2f | %.0f | %.0f%% / %.0f%% | %s | %d MiB |\n", t.name, t.throughput.median(), t.throughput,
			t.throughput.median()/base.throughput.median(), t.p50.median(), t.p99.median(), t.cpu.median(),
			t.gatewayBusy.median(), t.loadBusy.median(), cache, t.rss/1024)
	}
	if len(rates) == 0 {
		fmt.Println()
		return
	}
	// Latency at fixed rates, open loop: p50 / p99 / p99.9 ms, the p99
	// added to (1)'s, the serving process's CPU per request, and the p99
	// of the warm-up that starts each run (a cold start after the target
	// idled) with what it adds to (1)'s.
	fmt.Print("\n| target (fixed rate, open loop) |")
	for _, rate := range rates {
		fmt.Printf(" %.0f req/s: p50 / p99 / p99.9 ms | added p99 | CPU µs/req | warm-up p99 ms | added |", rate)
	}
	fmt.Print("\n|---|")
	for range rates {
		fmt.Print("---:|---:|---:|---:|---:|")
	}
	fmt.Println()
	for _, t := range ts {
		if len(t.rates) == 0 {
			continue
		}
		fmt.Printf("| %s |", t.name)
		for k, r := range t.rates {
			added, warmAdded := "—", "—"
			if t != base {
				added = fmt.Sprintf("%+.2f ms", r.p99.median()-base.rates[k].p99.median())
				warmAdded = fmt.Sprintf("%+.2f ms", r.warmP99.median()-base.rates[k].warmP99.median())
			}
			fmt.Printf(" %.2f / %.2f / %.2f | %s | %.0f | %.2f | %s |", r.p50.median(), r.p99.median(), r.p999.median(), added,
				r.cpu.median(), r.warmP99.median(), warmAdded)
		}
		fmt.Println()
	}
	fmt.Println()
}

// memResult is the memory of a Gatehouse whose store holds many users'
// grants, after each of them made a request.
type memResult struct {
	store         string
	users         int
	requests      int
	took          time.Duration
	rss, peak     int64 // KiB
	storeBytes    int64
	storeMemLabel string
}

func measureMemory(ctx context.Context, c config, up *process, store string) (memResult, error) {
	m := memResult{store: store, users: c.memUsers}
	s := "memory-" + store
	// The embedded store syncs each write; on tmpfs filling it takes
	// seconds instead of minutes.
	dir := filepath.Join(c.work, s)
	if shm, err := os.MkdirTemp("/dev/shm", "gatehouse-bench"); err == nil {
		defer os.RemoveAll(shm)
		dir = shm
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return m, err
	}
	fmt.Printf("memory, %s store: %d users with a grant…\n", store, c.memUsers)
	pop, err := makeGrantedPopulation(c.memUsers)
	if err != nil {
		return m, err
	}
	storeURL := "file://" + filepath.Join(dir, "grants.db")
	var redis *process
	if store == "redis" {
		if redis, storeURL, err = startRedis(c, s); err != nil {
			return m, err
		}
		defer redis.stop()
	}
	if err := pop.fillConcurrently(ctx, storeURL, 16); err != nil {
		return m, err
	}
	addr, err := freePort()
	if err != nil {
		return m, err
	}
	// This run measures memory, not latency: 32 cold lookups at a time
	// keep a gateway on one CPU saturated, and a store read that waits
	// for that CPU past grants_timeout would be a 503 (2.5% of them did
	// at 50 ms), so its reads get a second.
	proc, err := startCaddy(c, s, gatehouseCaddyfile("admin off", addr, up.addr, filepath.Join(c.work, s+"-audit.log"), storeURL,
		filepath.Join(c.repo, "policies"), "", max(c.grantsTimeout, time.Second), c.policyTimeout, false, false), addr, c.pin.gateway)
	if err != nil {
		return m, err
	}
	defer proc.stop()
	// Every user once, 32 at a time, bounded in time.
	client := newClient(64)
	start := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	deadline := start.Add(3 * time.Minute)
	for range 32 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= len(pop.sessions) {
					return
				}
				req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/work/%d", addr, i%c.paths), nil)
				req.Header.Set("Cookie", pop.sessions[i])
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	m.took = time.Since(start)
	m.requests = int(min(next.Load(), int64(len(pop.sessions))))
	if f := failed.Load(); f > 0 {
		return m, fmt.Errorf("%d of %d requests failed", f, m.requests)
	}
	m.rss = proc.rss()
	m.peak = proc.peakRSS()
	if store == "file" {
		if st, err := os.Stat(filepath.Join(dir, "grants.db")); err == nil {
			m.storeBytes = st.Size()
			m.storeMemLabel = "file size"
		}
	} else {
		m.storeBytes = redisUsedMemory(redis.addr)
		m.storeMemLabel = "Redis used_memory"
	}
	return m, nil
}

func redisUsedMemory(addr string) int64 {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprint(conn, "INFO memory\r\n")
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "used_memory:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func printMemory(c config, ms []memResult) {
	fmt.Println("| grant store | users with a grant | requests (one per user) | took | Gatehouse RSS after | peak RSS | store |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, m := range ms {
		fmt.Printf("| %s | %d | %d | %s | %d MiB | %d MiB | %d MiB (%s) |\n", m.store, m.users, m.requests, m.took.Round(100*time.Millisecond),
			m.rss/1024, m.peak/1024, m.storeBytes>>20, m.storeMemLabel)
	}
	fmt.Println()
}
