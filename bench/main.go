// Command bench measures what Gatehouse costs next to plain Caddy, on
// loopback, in one run:
//
//  1. plain Caddy reverse_proxy to a small upstream (the limit);
//  2. Gatehouse with sessions of many distinct users over varied paths,
//     the policy library and the embedded grant store;
//  3. the same with Redis;
//  4. the same on a step-up-protected path the sessions already satisfy.
//
// Each target runs alone on a CPU of its own (taskset), the load and the
// upstream on the others. Each gets the same bounded wrk run (throughput,
// with wrk's latency), repeated, and the median is reported with its
// ratio to (1); then a rate-limited Go load generator sends half and a
// quarter of (1)'s throughput to each target to measure the p50, p99 and
// p99.9 latency Gatehouse adds when not saturated. The run's figures are
// checked against issue 17's goals. Finally it reports Gatehouse's
// resident memory under load and with 100k distinct users' grants in the
// store.
//
//	go run ./bench                  # the full run (about 11 minutes)
//	go run ./bench -duration 2s -runs 1 -mem-users 2000   # a quick look
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

type config struct {
	duration   time.Duration
	runs       int
	threads    int
	conns      int
	users      int
	paths      int
	memUsers   int
	bin        string
	repo       string
	work       string
	keep       bool
	skipMemory bool
	rates      []float64 // fixed rates as fractions of (1)'s throughput
	pin        pinning
	// grantsTimeout and policyTimeout are the targets' grants_timeout
	// and policy_timeout. The defaults are production's; a test on a
	// starved machine gives more, so that a lookup that waits for a CPU is
	// not a 503, nor an evaluation a policy_error deny.
	grantsTimeout, policyTimeout time.Duration
}

func main() {
	var c config
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "length of each wrk run and each fixed-rate run")
	flag.IntVar(&c.runs, "runs", 3, "runs per target; the median is reported")
	flag.IntVar(&c.threads, "threads", 0, "wrk threads (default: one per load CPU, up to 4)")
	flag.IntVar(&c.conns, "conns", 32, "wrk connections")
	flag.IntVar(&c.users, "users", 1000, "distinct users with a session")
	flag.IntVar(&c.paths, "paths", 200, "distinct paths under each prefix")
	flag.IntVar(&c.memUsers, "mem-users", 100000, "distinct users with a grant for the memory run")
	flag.StringVar(&c.bin, "gatehouse", "", "a gatehouse binary (default: build ./cmd/gatehouse)")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (Caddyfiles, audit logs)")
	flag.BoolVar(&c.skipMemory, "skip-memory", false, "skip the memory run")
	flag.DurationVar(&c.grantsTimeout, "grants-timeout", 50*time.Millisecond, "the targets' grants_timeout")
	flag.DurationVar(&c.policyTimeout, "policy-timeout", 100*time.Millisecond, "the targets' policy_timeout")
	rates := flag.String("rates", "0.5,0.25", "fixed rates for the latency runs, as fractions of (1)'s throughput (empty: none)")
	pinned := flag.Bool("pin", true, "run each gateway under test on a CPU of its own and the load on the others (taskset)")
	flag.Parse()
	c.pin = pin(*pinned)
	if c.threads == 0 {
		// After pinning this process sees the load CPUs only; one wrk
		// thread each keeps wrk from competing with the upstream for them.
		c.threads = min(4, runtime.NumCPU())
	}
	for _, f := range strings.FieldsFunc(*rates, func(r rune) bool { return r == ',' || r == ' ' }) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 || v > 1 {
			fmt.Fprintf(os.Stderr, "bench: -rates: %q is not a fraction in (0, 1]\n", f)
			os.Exit(2)
		}
		c.rates = append(c.rates, v)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	for _, tool := range []struct{ name, pkg string }{{"wrk", "wrk"}, {"redis-server", "redis-server"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return fmt.Errorf("%s is required: apt-get install -y %s", tool.name, tool.pkg)
		}
	}
	var err error
	if c.repo, err = repoRoot(); err != nil {
		return err
	}
	if c.work, err = os.MkdirTemp("", "gatehouse-bench"); err != nil {
		return err
	}
	if c.keep {
		fmt.Println("work directory:", c.work)
	} else {
		defer os.RemoveAll(c.work)
	}
	if c.bin == "" {
		c.bin = filepath.Join(c.work, "gatehouse")
		start := time.Now()
		cmd := c.pin.command(c.pin.all(), "go", "build", "-o", c.bin, "./cmd/gatehouse")
		cmd.Dir, cmd.Stdout, cmd.Stderr = c.repo, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building gatehouse: %w", err)
		}
		fmt.Printf("built gatehouse in %s\n", time.Since(start).Round(100*time.Millisecond))
	}
	fmt.Printf("%s, %s, %s; wrk -t%d -c%d -d%s, %d runs per target (median); %d users over %d paths\n\n",
		time.Now().Format(time.RFC3339), c.pin, cpuModel(), c.threads, c.conns, c.duration, c.runs, c.users, 2*c.paths)

	ctx := context.Background()
	up, err := startUpstream(ctx, c)
	if err != nil {
		return err
	}
	defer up.stop()

	targets := []*target{plainTarget(c), accessLogTarget(c), gatehouseTarget(c, "file"), shadowTarget(c), noCacheTarget(c), gatehouseTarget(c, "redis"), stepUpTarget(c)}
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()
	for _, t := range targets {
		if err := t.prepare(ctx, c, up); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	c.pin.report(c.bin)
	// Runs are interleaved (1, 2, 3, 4, 1, 2…) so that the machine's
	// drift falls on every target alike.
	for i := range c.runs {
		for _, t := range targets {
			if err := t.throughputRun(c, i); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
		}
	}
	for _, t := range targets {
		if err := t.finishThroughput(c); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	// The fixed-rate runs send the same fractions of plain Caddy's
	// throughput to every target: half, as the issue asks, and a quarter,
	// a lighter load to compare with.
	var rates []float64
	for _, f := range c.rates {
		rates = append(rates, targets[0].throughput.median()*f)
	}
	for k, rate := range rates {
		for i := range c.runs {
			for _, t := range targets {
				if t.noRate {
					continue
				}
				if err := t.rateRun(c, rate, k, i); err != nil {
					return fmt.Errorf("%s at %.0f req/s: %w", t.name, rate, err)
				}
			}
		}
	}
	for _, t := range targets {
		t.stop()
	}
	printTable(targets, rates)
	goals := checkGoals(targets, c.rates)
	printGoals(goals, targets)
	printMissedProfiles(goals)

	if !c.skipMemory {
		var mems []memResult
		for _, store := range []string{"file", "redis"} {
			m, err := measureMemory(ctx, c, up, store)
			if err != nil {
				return fmt.Errorf("memory with %s: %w", store, err)
			}
			mems = append(mems, m)
		}
		printMemory(c, mems)
	}
	return nil
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("run bench from the repository: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "?"
}

// series is one measurement over the runs.
type series []float64

func (s series) median() float64 {
	if len(s) == 0 {
		return 0
	}
	c := append(series(nil), s...)
	sort.Float64s(c)
	return c[len(c)/2]
}

func (s series) String() string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprintf("%.0f", v)
	}
	return strings.Join(parts, " ")
}
