// Package e2e tests Gatehouse as users meet it: a Caddy binary built from
// this repository, a certified OpenID Provider (oidc-provider, under idp/),
// an upstream app that echoes what it receives, all real processes on
// random loopback ports, with HTTPS from Caddy's internal CA.
package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// gatehouseBin is the Caddy binary with Gatehouse, built once per run.
var gatehouseBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if _, err := exec.LookPath("node"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: node is required for the test IdP: apt-get install nodejs npm")
		return 1
	}
	if _, err := os.Stat("idp/node_modules/oidc-provider"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the test IdP's packages are missing: run `npm ci` in e2e/idp (./test.sh does)")
		return 1
	}
	if bin := os.Getenv("GATEHOUSE_BIN"); bin != "" {
		gatehouseBin = bin
	} else {
		dir, err := os.MkdirTemp("", "gatehouse-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		gatehouseBin = filepath.Join(dir, "gatehouse")
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", gatehouseBin, "../cmd/gatehouse")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building gatehouse:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: built gatehouse in %s\n", time.Since(start).Round(100*time.Millisecond))
	}
	return m.Run()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// logBuffer collects a process's output for failure reports and checks.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startProcess starts cmd in its own process group, stopped at cleanup;
// its output is shown if the test fails.
func startProcess(t testing.TB, name string, cmd *exec.Cmd) <-chan struct{} {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL} // gone with the test binary, even on a timeout panic
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	return done
}

// --- the OpenID Provider --------------------------------------------------

type idpClient struct {
	ClientID               string   `json:"client_id"`
	ClientSecret           string   `json:"client_secret,omitempty"`
	RedirectURIs           []string `json:"redirect_uris"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
	GrantTypes             []string `json:"grant_types,omitempty"`
	// Back-channel logout (backchannel_test.go).
	BackchannelLogoutURI             string `json:"backchannel_logout_uri,omitempty"`
	BackchannelLogoutSessionRequired bool   `json:"backchannel_logout_session_required,omitempty"`
}

type idp struct {
	Issuer string
	cmd    *exec.Cmd
	log    *logBuffer
}

// stop kills the IdP (as a crash would).
func (p *idp) stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// startIdP starts the test OpenID Provider with clients registered.
func startIdP(t testing.TB, clients ...idpClient) *idp {
	return startIdPWith(t, nil, clients...)
}

// startIdPWith starts the test IdP with extra environment (IDP_PROFILE,
// IDP_ACR_HINT_ONLY). A start that stalls is retried once: on a loaded
// 2-core machine Node has been seen to stall before listening.
func startIdPWith(t testing.TB, env []string, clients ...idpClient) *idp {
	t.Helper()
	if p := tryStartIdP(t, env, clients, 15*time.Second); p != nil {
		return p
	}
	t.Log("the test IdP did not start within 15s; trying once more")
	if p := tryStartIdP(t, env, clients, 30*time.Second); p != nil {
		return p
	}
	t.Fatal("the test IdP did not start twice")
	return nil
}

func tryStartIdP(t testing.TB, env []string, clients []idpClient, wait time.Duration) *idp {
	t.Helper()
	cj, _ := json.Marshal(clients)
	cmd := exec.Command("node", "server.mjs")
	cmd.Dir = "idp"
	cmd.Env = append(append(os.Environ(), "IDP_PORT=0", "IDP_CLIENTS="+string(cj)), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	cmd.Stderr = logs
	startProcess(t, "idp", cmd)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(logs, stdout)
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatalf("idp exited before it was ready:\n%s", logs)
		}
		var hello struct{ Issuer string }
		if err := json.Unmarshal([]byte(line), &hello); err != nil || hello.Issuer == "" {
			t.Fatalf("idp said %q: %v", line, err)
		}
		p := &idp{Issuer: hello.Issuer, cmd: cmd, log: logs}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("idp log:\n%s", logs)
			}
		})
		return p
	case <-time.After(wait):
		t.Logf("idp not ready after %s:\n%s", wait, logs)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return nil
}

// --- the upstream app -----------------------------------------------------

// echoed is what the upstream saw of one request.
type echoed struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   string              `json:"query"`
	Headers map[string][]string `json:"headers"`
}

type upstream struct {
	*httptest.Server
	hits atomic.Int64
}

// startUpstream starts an app that answers every request with what it
// received, as JSON.
func startUpstream(t testing.TB) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			acceptWebSocket(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoed{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Headers: r.Header})
	}))
	t.Cleanup(u.Close)
	return u
}

// acceptWebSocket completes a WebSocket handshake (RFC 6455) and then
// closes the connection: enough for a client to see that the upgrade
// reached the app.
func acceptWebSocket(w http.ResponseWriter, r *http.Request) {
	sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n")
	_ = rw.Flush()
}

// --- Gatehouse --------------------------------------------------------------

type gatehouse struct {
	dir     string
	log     *logBuffer
	roots   *x509.CertPool
	rootPEM []byte
	config  string   // Caddyfile path
	admin   string   // admin API address
	env     []string // process environment
	stop    func()   // stops the process (also done at cleanup)
}

// reload asks the running process to load its Caddyfile again, as
// `caddy reload` does in production.
func (g *gatehouse) reload(t testing.TB) {
	t.Helper()
	cmd := exec.Command(gatehouseBin, "reload", "--config", g.config, "--adapter", "caddyfile", "--address", g.admin, "--force")
	cmd.Env = g.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
}

// startGatehouse runs the built binary with a Caddyfile: globalOptions
// (placed in the global block along with test settings) and the sites. It
// returns once every URL in waitFor answers its health check over HTTPS.
func startGatehouse(t testing.TB, caddyfile string, env []string, waitFor ...string) *gatehouse {
	t.Helper()
	return startGatehouseAdmin(t, fmt.Sprintf("127.0.0.1:%d", freePort(t)), caddyfile, env, waitFor...)
}

// startGatehouseAdmin is startGatehouse with the admin API at admin: an
// address, unix//path for a socket, or off.
func startGatehouseAdmin(t testing.TB, admin, caddyfile string, env []string, waitFor ...string) *gatehouse {
	t.Helper()
	dir := t.TempDir()
	global := fmt.Sprintf("{\n\tadmin %s\n\tlocal_certs\n\tskip_install_trust\n\tstorage file_system %s\n\tlog {\n\t\tformat json\n\t\tlevel INFO\n\t}\n}\n\n",
		admin, filepath.Join(dir, "storage"))
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(global+caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gatehouse{dir: dir, log: &logBuffer{}, config: path, admin: admin}
	g.env = append(os.Environ(), append([]string{"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}, env...)...)
	cmd := exec.Command(gatehouseBin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = g.env
	cmd.Stdout, cmd.Stderr = g.log, g.log
	exited := startProcess(t, "gatehouse", cmd)
	g.stop = func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gatehouse log:\n%s", g.log)
		}
	})
	rootPath := filepath.Join(dir, "storage", "pki", "authorities", "local", "root.crt")
	deadline := time.Now().Add(30 * time.Second)
	for _, base := range waitFor {
		for {
			if time.Now().After(deadline) {
				t.Fatalf("gatehouse not healthy at %s after 30s:\n%s", base, g.log)
			}
			select {
			case <-exited:
				t.Fatalf("gatehouse exited:\n%s", g.log)
			default:
			}
			if g.roots == nil {
				if pem, err := os.ReadFile(rootPath); err == nil {
					pool := x509.NewCertPool()
					if pool.AppendCertsFromPEM(pem) {
						g.roots, g.rootPEM = pool, pem
					}
				}
			}
			if g.roots != nil {
				c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: g.roots}}}
				if resp, err := c.Get(base + "/.gatehouse/healthz"); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						break
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return g
}

// eventually polls cond every 20 ms until it holds or within has passed,
// and reports whether it held. Everything the e2e tests wait for that a
// process does not signal goes through it.
func eventually(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// auditWait is how long an audit line may take to reach a test: it is
// written before the answer, but reaches the test through a pipe.
const auditWait = 5 * time.Second

// findAudit returns the first audit line of any of the nodes that match
// accepts, waiting up to auditWait for it; nil if none comes.
func findAudit(match func(map[string]any) bool, nodes ...*gatehouse) map[string]any {
	var found map[string]any
	eventually(auditWait, func() bool {
		for _, g := range nodes {
			for _, l := range g.auditLines() {
				if match(l) {
					found = l
					return true
				}
			}
		}
		return false
	})
	return found
}

// auditLine matches an audit line whose fields have the given values
// (pairs of field and value; an empty value matches any).
func auditLine(kv ...string) func(map[string]any) bool {
	return func(l map[string]any) bool {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] != "" && l[kv[i]] != kv[i+1] {
				return false
			}
		}
		return true
	}
}

// waitAudit is findAudit on one node.
func (g *gatehouse) waitAudit(_ *testing.T, match func(map[string]any) bool) map[string]any {
	return findAudit(match, g)
}

// auditLines returns the audit log lines written so far.
func (g *gatehouse) auditLines() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(g.log.String(), "\n") {
		if !strings.Contains(line, `"logger":"http.handlers.gatehouse.audit"`) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}
