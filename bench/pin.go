package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// pinning is where the processes run: the gateway under test alone on
// one CPU, everything else on the others. The bench process runs there
// (and with it the fixed-rate generator), and so do wrk, the upstream
// and Redis, which inherit its affinity. A target's throughput is then
// what one CPU of its own serves, and its latency is not its load
// generator's queueing.
type pinning struct {
	gateway, load string // CPU lists for taskset; empty when not pinned
}

// pinnedEnv marks the bench process started again under taskset, with
// "<gateway CPUs>/<load CPUs>".
const pinnedEnv = "BENCH_PINNED"

// pin starts the bench again under taskset on the load CPUs, once. The
// running process cannot move itself: Go sizes GOMAXPROCS from the
// affinity at start, and threads started before would stay where they
// were. When pinning is impossible it warns and returns no pinning.
func pin(on bool) pinning {
	if !on {
		warnUnpinned("-pin=false")
		return pinning{}
	}
	if v, ok := os.LookupEnv(pinnedEnv); ok {
		gateway, load, _ := strings.Cut(v, "/")
		return pinning{gateway: gateway, load: load}
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		warnUnpinned("taskset is missing: apt-get install -y util-linux")
		return pinning{}
	}
	cpus, err := allowedCPUs()
	if err != nil || len(cpus) < 2 {
		warnUnpinned(fmt.Sprintf("this process may use %d CPU(s) (%v); pinning needs 2", len(cpus), err))
		return pinning{}
	}
	p := pinning{gateway: strconv.Itoa(cpus[0]), load: cpuList(cpus[1:])}
	exe, err := os.Executable()
	if err == nil {
		args := append([]string{"taskset", "-c", p.load, exe}, os.Args[1:]...)
		err = syscall.Exec(taskset, args, append(os.Environ(), pinnedEnv+"="+p.gateway+"/"+p.load))
	}
	warnUnpinned(fmt.Sprintf("starting again under taskset: %v", err))
	return pinning{}
}

func warnUnpinned(why string) {
	fmt.Printf("WARNING: not pinned (%s): the gateway under test, the load generators and the upstream share the CPUs, "+
		"so a target's figures are not its own CPU's\n", why)
}

// command is name with args, on cpus when pinned; with no cpus, where
// this process runs.
func (p pinning) command(cpus, name string, args ...string) *exec.Cmd {
	if p.gateway == "" || cpus == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("taskset", append([]string{"-c", cpus, name}, args...)...)
}

func (p pinning) String() string {
	if p.gateway == "" {
		return fmt.Sprintf("%d CPUs shared by all, not pinned", runtime.NumCPU())
	}
	return fmt.Sprintf("the gateway on CPU %s, the load on CPU %s", p.gateway, p.load)
}

// all is every CPU of the run, for what is not measured (the build).
func (p pinning) all() string { return p.gateway + "," + p.load }

// report says where each side runs and checks that each side's Go
// runtime sized itself to its CPUs: this process's GOMAXPROCS, and the
// gateway binary's as `caddy environ` prints it on the gateway's CPUs
// (the running gateway would print it with its whole environment, into
// its log).
func (p pinning) report(bin string) {
	if p.gateway == "" {
		return
	}
	gateway := "unknown"
	out, err := p.command(p.gateway, bin, "environ").Output()
	if m := reGOMAXPROCS.FindSubmatch(out); m != nil {
		gateway = string(m[1])
	} else if err != nil {
		gateway = err.Error()
	}
	fmt.Printf("pinned: the gateway under test on CPU %s (GOMAXPROCS %s); wrk, the fixed-rate generator, the upstream and Redis on CPU %s (GOMAXPROCS %d)\n",
		p.gateway, gateway, p.load, runtime.GOMAXPROCS(0))
}

var reGOMAXPROCS = regexp.MustCompile(`(?m)^runtime\.GOMAXPROCS=(\d+)$`)

// allowedCPUs is this process's affinity, from Cpus_allowed_list
// ("0-3,6").
func allowedCPUs() ([]int, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return parseCPUList(strings.TrimSpace(v))
		}
	}
	return nil, fmt.Errorf("no Cpus_allowed_list in /proc/self/status")
}

func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		from, err1 := strconv.Atoi(lo)
		to, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || to < from {
			return nil, fmt.Errorf("CPU list %q", s)
		}
		for cpu := from; cpu <= to; cpu++ {
			cpus = append(cpus, cpu)
		}
	}
	return cpus, nil
}

func cpuList(cpus []int) string {
	parts := make([]string, len(cpus))
	for i, cpu := range cpus {
		parts[i] = strconv.Itoa(cpu)
	}
	return strings.Join(parts, ",")
}
