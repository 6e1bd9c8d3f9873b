package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuWatch follows both sides' CPU over a run: the gateway's process; the
// processes behind it (the upstream, Redis), which run on the load's
// CPUs; this process, the fixed-rate generator; and the gateway's CPU,
// whatever ran there.
type cpuWatch struct {
	t                     *target
	cpu                   string // the gateway's, when pinned
	start                 time.Time
	gateway, behind, self time.Duration
	busy, all             int64
}

func (t *target) watchCPU(c config) cpuWatch {
	w := cpuWatch{t: t, cpu: c.pin.gateway, start: time.Now(), gateway: t.proc.cpuTime(), behind: t.behindCPU(), self: selfCPU()}
	w.busy, w.all = busyTicks(w.cpu)
	return w
}

// cpuUse is what a run used.
type cpuUse struct {
	wall, gateway, behind, self time.Duration
	// gatewayCPU is the percentage of the gateway's CPU that was busy,
	// whatever ran there; negative when not pinned.
	gatewayCPU float64
}

func (w cpuWatch) stop() cpuUse {
	u := cpuUse{wall: time.Since(w.start), gateway: w.t.proc.cpuTime() - w.gateway, behind: w.t.behindCPU() - w.behind,
		self: selfCPU() - w.self, gatewayCPU: -1}
	if busy, all := busyTicks(w.cpu); all > w.all {
		u.gatewayCPU = 100 * float64(busy-w.busy) / float64(all-w.all)
	}
	return u
}

// gatewayBusy is the percentage of one CPU the gateway used.
func (u cpuUse) gatewayBusy() float64 { return percent(u.gateway, u.wall, 1) }

// loadBusy is the percentage of the load's CPUs that the load generator
// (load) and the processes behind the gateway used. This process sees
// only the load's CPUs when pinned, all of them when not.
func (u cpuUse) loadBusy(load time.Duration) float64 {
	return percent(load+u.behind, u.wall, runtime.NumCPU())
}

// describe says how busy each side was, and warns when the figures are
// not the gateway's alone: the load side had no CPU to spare, or other
// processes used the gateway's. Such runs are counted on t.
func (t *target) describe(u cpuUse, generator string, load time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CPU busy: the gateway %.0f%% of one", u.gatewayBusy())
	if u.gatewayCPU >= 0 {
		fmt.Fprintf(&b, " (its CPU, with others' processes: %.0f%%)", u.gatewayCPU)
	}
	fmt.Fprintf(&b, ", the load %.0f%% of %d (%s %.0f%%, the upstream and Redis %.0f%%)",
		u.loadBusy(load), runtime.NumCPU(), generator, percent(load, u.wall, 1), percent(u.behind, u.wall, 1))
	doubtful := false
	if u.loadBusy(load) > 90 {
		b.WriteString("\nWARNING: the load side had no CPU to spare: it, not the gateway, may have been the limit")
		doubtful = true
	}
	if u.gatewayCPU-u.gatewayBusy() > 10 {
		b.WriteString("\nWARNING: other processes took the gateway's CPU: this run measured them too")
		doubtful = true
	}
	if doubtful {
		t.doubtfulRuns++
	}
	return b.String()
}

func percent(cpu, wall time.Duration, cpus int) float64 {
	return 100 * float64(cpu) / float64(wall) / float64(cpus)
}

// behindCPU is the CPU used so far by the processes behind the gateway.
func (t *target) behindCPU() time.Duration {
	d := t.up.cpuTime()
	if t.redis != nil {
		d += t.redis.cpuTime()
	}
	return d
}

// selfCPU is the CPU this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// busyTicks is how long cpu was busy, whatever ran there, and how long
// it was up, in clock ticks (from /proc/stat). On a shared machine, the
// gateway's CPU busy with others' processes is CPU the gateway lacked.
func busyTicks(cpu string) (busy, all int64) {
	if cpu == "" {
		return 0, 0 // not pinned: no CPU is the gateway's
	}
	b, _ := os.ReadFile("/proc/stat")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || f[0] != "cpu"+cpu {
			continue
		}
		// user nice system idle iowait irq softirq steal; guest time is
		// counted in user already.
		for i, v := range f[1:9] {
			n, _ := strconv.ParseInt(v, 10, 64)
			all += n
			if i != 3 && i != 4 {
				busy += n
			}
		}
	}
	return busy, all
}
