package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBenchHarness runs the benchmark harness (go run ./bench) briefly:
// every target comes up, answers every request of every user 2xx (the
// harness fails on anything else, and on any audit line that is not an
// allow), and is measured; the goals table is printed (met or not: this
// test runs on busy machines); the memory run fills both stores.
func TestBenchHarness(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk is required: apt-get install -y wrk (./test.sh installs it)")
	}
	// grants_timeout and policy_timeout 2s: this test checks that every
	// target answers every request correctly, not how fast; with
	// production's 50 and 100 ms, a grant lookup or an evaluation that
	// waited for the gateway's one CPU on a busy machine was (rightly) a
	// 503 or a 403.
	cmd := exec.Command("go", "run", "../bench", "-gatehouse", gatehouseBin, "-duration", "1s", "-runs", "1",
		"-users", "60", "-paths", "10", "-mem-users", "400", "-grants-timeout", "2s", "-policy-timeout", "2s")
	profiles := t.TempDir()
	cmd.Env = append(os.Environ(), "BENCH_PPROF="+profiles)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the harness failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	// Pinned, with the gateway's Go runtime sized to its one CPU, or said
	// not to be.
	pinned := regexp.MustCompile(`(?m)^pinned: the gateway under test on CPU [0-9]+ \(GOMAXPROCS 1\);`)
	if !pinned.Match(out) && !strings.Contains(string(out), "WARNING: not pinned") {
		t.Error("neither pinned (with the gateway's GOMAXPROCS 1) nor a warning that it is not")
	}
	row := regexp.MustCompile(`(?m)^\| (\([0-9a-z]+\)[^|]*) \| ([0-9]+) \|`)
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(out), -1) {
		if m[2] == "0" {
			t.Errorf("%s: 0 req/s", m[1])
		}
		seen[strings.TrimSpace(m[1])] = true
	}
	for _, want := range []string{"(1) Caddy reverse_proxy", "(1b) Caddy reverse_proxy with an access log", "(2) Gatehouse, embedded store",
		"(2b) Gatehouse, embedded store, policy cache off", "(3) Gatehouse, Redis", "(4) Gatehouse, step-up path"} {
		if !seen[want] {
			t.Errorf("no result for %s", want)
		}
	}
	// The latency table: each measured target at both default rates,
	// p50 / p99 / p99.9, added p99, CPU, the warm-up's p99 and what it adds.
	rates := regexp.MustCompile(`(?m)^\| (\([0-9a-z]+\)[^|]*) \|( [0-9.]+ / [0-9.]+ / [0-9.]+ \| [^|]+ \| [0-9]+ \| [0-9.]+ \| [^|]+ \|){2}$`)
	rated := map[string]bool{}
	for _, m := range rates.FindAllStringSubmatch(string(out), -1) {
		rated[strings.TrimSpace(m[1])] = true
	}
	for _, want := range []string{"(1) Caddy reverse_proxy", "(2) Gatehouse, embedded store", "(3) Gatehouse, Redis", "(4) Gatehouse, step-up path"} {
		if !rated[want] {
			t.Errorf("no fixed-rate latency for %s at both rates", want)
		}
	}
	// The goals, each with a verdict (the run is too short and the machine
	// too busy for the verdicts to mean anything).
	goal := regexp.MustCompile(`(?m)^\| (\([0-9]\) [a-z0-9 -]+) \| [<≥][^|]+ \| [^|]+ \| (yes|\*\*no\*\*) \|$`)
	goals := map[string]bool{}
	for _, m := range goal.FindAllStringSubmatch(string(out), -1) {
		goals[m[1]] = true
	}
	for _, want := range []string{"(2) throughput", "(3) throughput", "(4) throughput", "(2) added p99 at half load", "(3) added p99 at half load",
		"(4) added p99 at half load", "(2) added warm-up p99 at half load", "(3) added warm-up p99 at half load", "(4) added warm-up p99 at half load"} {
		if !goals[want] {
			t.Errorf("the goals table has no verdict on %q", want)
		}
	}
	// BENCH_PPROF: a CPU profile of each target's first wrk run and each
	// rated target's first run at each rate.
	for _, name := range []string{"1--caddy-reverse-proxy-rate0", "2--gatehouse--embedded-store-rate1", "4--gatehouse--step-up-path-rate1",
		"2--gatehouse--embedded-store-wrk"} {
		if st, err := os.Stat(filepath.Join(profiles, name+".pprof")); err != nil || st.Size() == 0 {
			t.Errorf("profile %s: %v", name, err)
		}
	}
	for _, want := range []string{"| file | 400 | 400 |", "| redis | 400 | 400 |"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the memory table has no row %q", want)
		}
	}
}
