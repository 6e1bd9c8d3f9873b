package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// A goal is one of issue 17's targets for a machine, checked against the
// run's own figures. A missed goal is reported, never a failure: the
// harness fails on wrong answers only.
type goal struct {
	what, wanted, measured string
	met, measuredAtAll     bool
	// Whose CPU profile explains a miss, and of which run ("wrk" or
	// "rate<k>").
	target  *target
	profile string
}

// Limits of the goals.
const (
	minThroughput = 0.95 // of (1); and (4) of (2)
	maxAddedP99   = 1.0  // ms, at half of (1)'s maximum
	maxAddedWarm  = 5.0  // ms, the warm-up's p99 at half of (1)'s maximum
)

// checkGoals compares the full check, embedded (2) and Redis (3), and the
// step-up path (4) with plain Caddy (1); fractions are the fixed rates'
// (the latency goals are at 0.5).
func checkGoals(ts []*target, fractions []float64) []goal {
	base, file, redis, stepUp := byLabel(ts, "(1)"), byLabel(ts, "(2)"), byLabel(ts, "(3)"), byLabel(ts, "(4)")
	gs := []goal{throughputGoal(file, base), throughputGoal(redis, base), throughputGoal(stepUp, file)}
	half := slices.Index(fractions, 0.5)
	for _, t := range []*target{file, redis, stepUp} {
		gs = append(gs, latencyGoal(t, base, half, "added p99 at half load", maxAddedP99, func(r rateResult) series { return r.p99 }))
	}
	for _, t := range []*target{file, redis, stepUp} {
		gs = append(gs, latencyGoal(t, base, half, "added warm-up p99 at half load", maxAddedWarm, func(r rateResult) series { return r.warmP99 }))
	}
	return gs
}

func byLabel(ts []*target, label string) *target {
	for _, t := range ts {
		if strings.HasPrefix(t.name, label+" ") {
			return t
		}
	}
	panic("bench: no target " + label)
}

func label(t *target) string { return strings.Fields(t.name)[0] }

func throughputGoal(t, ref *target) goal {
	ratio := t.throughput.median() / ref.throughput.median()
	return goal{
		what: label(t) + " throughput", wanted: fmt.Sprintf("≥ %.2f× %s", minThroughput, label(ref)),
		measured: fmt.Sprintf("%.2f×", ratio), met: ratio >= minThroughput, measuredAtAll: true,
		target: t, profile: "wrk",
	}
}

func latencyGoal(t, base *target, k int, what string, limit float64, of func(rateResult) series) goal {
	g := goal{what: label(t) + " " + what, wanted: fmt.Sprintf("< %.0f ms", limit), measured: "not measured (-rates has no 0.5)", target: t}
	if k < 0 {
		return g
	}
	added := of(t.rates[k]).median() - of(base.rates[k]).median()
	g.measured, g.met, g.measuredAtAll = fmt.Sprintf("%+.2f ms", added), added < limit, true
	g.profile = fmt.Sprintf("rate%d", k)
	return g
}

func printGoals(gs []goal, ts []*target) {
	doubtful := 0
	for _, t := range ts {
		doubtful += t.doubtfulRuns
	}
	if doubtful > 0 {
		fmt.Printf("WARNING: %d runs were not the gateways' alone (see the WARNING lines above): "+
			"these verdicts are about this machine's other load as much as about the targets.\n", doubtful)
	}
	fmt.Println("| target | wanted | measured | met? |")
	fmt.Println("|---|---|---:|---|")
	for _, g := range gs {
		met := "—"
		switch {
		case g.met:
			met = "yes"
		case g.measuredAtAll:
			met = "**no**"
		}
		fmt.Printf("| %s | %s | %s | %s |\n", g.what, g.wanted, g.measured, met)
	}
	fmt.Println()
}

// printMissedProfiles shows the top of the CPU profile behind each missed
// goal (BENCH_PPROF keeps one per target and kind of run), each profile
// once.
func printMissedProfiles(gs []goal) {
	dir := os.Getenv("BENCH_PPROF")
	seen := map[string]bool{}
	for _, g := range gs {
		if g.met || !g.measuredAtAll {
			continue
		}
		if dir == "" {
			fmt.Println("A goal was missed: BENCH_PPROF=<dir> shows here the top of the CPU profile behind each miss.")
			return
		}
		file := filepath.Join(dir, g.target.slug+"-"+g.profile+".pprof")
		if seen[file] {
			continue
		}
		seen[file] = true
		fmt.Printf("%s missed: the top of %s's CPU profile (%s)\n", g.what, label(g.target), file)
		out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=15", file).CombinedOutput()
		if err != nil {
			fmt.Printf("go tool pprof: %v\n", err)
		}
		fmt.Printf("%s\n", out)
	}
}
