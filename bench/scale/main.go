// Command scale measures the grant stores at scale: memory and lookup
// cost with a million users' grants in Redis and in the embedded (bbolt)
// store, listing 100k pending access requests, and what a node's
// grants.Cache holds for 10k concurrent sessions. It starts its own
// redis-server on a random loopback port and a bbolt file in a temporary
// directory, fills both through the stores' own write path
// (grants.Import: the keys and records AddGrant and CreateRequest write),
// measures, and prints a Markdown table.
//
//	go run ./bench/scale                 # a million users (a few minutes on 2 cores)
//	go run ./bench/scale -users 20000    # a quick look
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

func main() {
	var c config
	flag.IntVar(&c.users, "users", 1_000_000, "users, each with a grant")
	flag.IntVar(&c.pending, "pending", 100_000, "pending access requests")
	flag.IntVar(&c.sessions, "sessions", 10_000, "concurrent sessions of one node (and as many revoked sessions in the store)")
	flag.IntVar(&c.lookups, "lookups", 20_000, "random users looked up, cold, for the latencies")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	dir, err := os.MkdirTemp("", "gatehouse-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	addr, stop, err := startRedis(dir)
	if err != nil {
		return err
	}
	defer stop()
	start := time.Now()
	res, err := measure(context.Background(), c, addr, dir, os.Stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "done in %s\n", time.Since(start).Round(time.Second))
	res.print(os.Stdout)
	return nil
}

// startRedis runs a redis-server on a free loopback port, without
// persistence (the figures are of memory, not of the disk), until stop.
func startRedis(dir string) (addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--dir", dir, "--save", "", "--appendonly", "no",
		"--logfile", filepath.Join(dir, "redis.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("redis-server: %w (apt-get install redis-server)", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}
	addr = "127.0.0.1:" + port
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if redistest.Ping(addr) == nil {
			return addr, stop, nil
		}
	}
	stop()
	log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
	return "", nil, fmt.Errorf("redis-server on %s did not answer within 10s:\n%s", addr, log)
}
