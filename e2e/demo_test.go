package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the demo program (what ./demo.sh runs, here with the
// tests' binary): it serves on loopback only, writes nothing outside its
// state directory (not in $HOME, not Caddy's autosave elsewhere), and
// stops on SIGTERM.
func TestDemo(t *testing.T) {
	demo := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", demo, "./demo").CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	home, state := t.TempDir(), filepath.Join(t.TempDir(), "state")
	port := freePort(t)
	cmd := exec.Command(demo, "-port", strconv.Itoa(port), "-state", state)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"), "GATEHOUSE_BIN="+gatehouseBin)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &logBuffer{}
	cmd.Stderr = stderr
	exited := startProcess(t, "demo", cmd)
	running := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Gatehouse demo is running") {
				running <- true
			}
		}
		running <- false
	}()
	select {
	case ok := <-running:
		if !ok {
			t.Fatalf("the demo stopped:\n%s", stderr)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("the demo did not start in 90 s:\n%s", stderr)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get(fmt.Sprintf("https://localhost:%d/.gatehouse/readyz", port))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the demo is not ready: %d", resp.StatusCode)
	}

	// Every socket listening on the demo's port is on loopback.
	listeners := listening(t, port)
	if len(listeners) == 0 {
		t.Fatalf("nothing listens on port %d", port)
	}
	for _, ip := range listeners {
		if !ip.IsLoopback() {
			t.Errorf("the demo listens on %s:%d", ip, port)
		}
	}
	if addrs := nonLoopbackAddrs(); len(addrs) > 0 {
		if conn, err := net.DialTimeout("tcp", net.JoinHostPort(addrs[0], strconv.Itoa(port)), time.Second); err == nil {
			conn.Close()
			t.Errorf("the demo answers on %s", addrs[0])
		}
	}

	// State: all of it in the state directory, nothing in $HOME.
	for _, f := range []string{"Caddyfile", "gatehouse.log", "grants.db", filepath.Join("caddy", "autosave.json")} {
		if _, err := os.Stat(filepath.Join(state, f)); err != nil {
			t.Errorf("the demo's state has no %s: %v", f, err)
		}
	}
	_ = filepath.Walk(home, func(p string, info os.FileInfo, err error) error {
		if err == nil && p != home {
			t.Errorf("the demo wrote %s outside its state directory", p)
		}
		return nil
	})

	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Error("the demo did not stop on SIGINT within 15 s")
	}
}

// listening returns the local addresses of the TCP sockets listening on
// port (from /proc/net/tcp and tcp6).
func listening(t *testing.T, port int) []net.IP {
	t.Helper()
	var ips []net.IP
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			if f == "/proc/net/tcp6" {
				continue // no IPv6
			}
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			addr, p, _ := strings.Cut(fields[1], ":")
			if n, _ := strconv.ParseInt(p, 16, 32); int(n) != port {
				continue
			}
			raw, _ := hex.DecodeString(addr)
			// /proc prints each 32-bit word in host (little-endian) order.
			for i := 0; i+4 <= len(raw); i += 4 {
				raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
			}
			ips = append(ips, net.IP(raw))
		}
	}
	return ips
}

// nonLoopbackAddrs are this machine's IPv4 addresses other than loopback.
func nonLoopbackAddrs() []string {
	var out []string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			out = append(out, n.IP.String())
		}
	}
	return out
}

// TestDemoChecksNode: demo.sh refuses a Node.js too old for the OpenID
// Provider, saying which version it needs, before doing anything else.
func TestDemoChecksNode(t *testing.T) {
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "node"), []byte("#!/bin/sh\necho 18.19.1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("../demo.sh")
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Node.js 18.19.1 is too old") || !strings.Contains(string(out), "22 LTS") {
		t.Errorf("demo.sh with Node.js 18: %v\n%s", err, out)
	}
}
