// Command demo runs Gatehouse in front of a sample legacy app, with the
// local test OpenID Provider, on this machine. Start it with ./demo.sh.
//
// It builds the gatehouse binary, starts the IdP (e2e/idp), the sample app
// and Gatehouse with caddyfile-examples/contractor-jit.Caddyfile (login,
// idle logout, the policy library, just-in-time grants in an embedded
// store, step-up MFA for approvers), prints the URL and the test users, and
// stops everything on Ctrl-C.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"html/template"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	port := flag.Int("port", 8443, "HTTPS port of the gateway on localhost")
	state := flag.String("state", "", "directory for all the demo's state (default .demo in the repository)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("demo: ")
	if err := run(*port, *state); err != nil {
		log.Fatal(err)
	}
}

func run(port int, state string) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if state == "" {
		state = filepath.Join(root, ".demo")
	}
	if state, err = filepath.Abs(state); err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// GATEHOUSE_BIN runs a binary built already (the tests').
	bin := os.Getenv("GATEHOUSE_BIN")
	if bin == "" {
		bin = filepath.Join(root, ".cache", "gatehouse")
		log.Printf("building %s …", bin)
		build := exec.Command("go", "build", "-o", bin, "./cmd/gatehouse")
		build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building gatehouse: %w", err)
		}
	}

	base := fmt.Sprintf("https://localhost:%d", port)

	// The sample legacy app.
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(appLn, legacyApp()) }()

	// The OpenID Provider.
	clients, _ := json.Marshal([]map[string]any{{
		"client_id": "demo", "client_secret": "demo-client-secret",
		"redirect_uris":             []string{base + "/.gatehouse/callback"},
		"post_logout_redirect_uris": []string{base + "/.gatehouse/logout"},
	}})
	idp := exec.Command("node", "server.mjs")
	idp.Dir = filepath.Join(root, "e2e", "idp")
	idp.Env = append(os.Environ(), "IDP_PORT=0", "IDP_CLIENTS="+string(clients))
	idp.Stderr = os.Stderr
	idpOut, err := idp.StdoutPipe()
	if err != nil {
		return err
	}
	if err := startGroup(idp); err != nil {
		return fmt.Errorf("starting the IdP (did npm ci run in e2e/idp?): %w", err)
	}
	defer stopGroup(idp)
	sc := bufio.NewScanner(idpOut)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	if !sc.Scan() {
		return fmt.Errorf("the IdP exited before it was ready")
	}
	var hello struct {
		Issuer string
		Users  []struct {
			Login, Password, Email, OTP string
			Groups                      []string
		}
	}
	if err := json.Unmarshal(sc.Bytes(), &hello); err != nil {
		return fmt.Errorf("the IdP said %q: %w", sc.Text(), err)
	}

	// Gatehouse, with the contractor-jit example as is.
	example, err := os.ReadFile(filepath.Join(root, "caddyfile-examples", "contractor-jit.Caddyfile"))
	if err != nil {
		return err
	}
	// Loopback only, no HTTP->HTTPS redirect listener on port 80, and every
	// file Caddy writes (certificates, the autosaved config) under state.
	global := fmt.Sprintf("{\n\tadmin off\n\tdefault_bind 127.0.0.1\n\tauto_https disable_redirects\n\tlocal_certs\n\tskip_install_trust\n\tstorage file_system %s\n}\n\n",
		filepath.Join(state, "caddy"))
	caddyfile := filepath.Join(state, "Caddyfile")
	if err := os.WriteFile(caddyfile, append([]byte(global), example...), 0o600); err != nil {
		return err
	}
	secret := make([]byte, 48)
	_, _ = rand.Read(secret)
	gh := exec.Command(bin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	gh.Env = append(os.Environ(),
		"XDG_CONFIG_HOME="+state, "XDG_DATA_HOME="+state,
		"GATEHOUSE_SITE="+base,
		"GATEHOUSE_ISSUER="+hello.Issuer,
		"GATEHOUSE_CLIENT_ID=demo",
		"GATEHOUSE_CLIENT_SECRET=demo-client-secret",
		"GATEHOUSE_COOKIE_SECRET="+base64.StdEncoding.EncodeToString(secret),
		"GATEHOUSE_UPSTREAM="+appLn.Addr().String(),
		// The embedded grant store: kept across demo runs in .demo/.
		"GATEHOUSE_GRANTS=file://"+filepath.Join(state, "grants.db"),
		"GATEHOUSE_POLICY="+filepath.Join(root, "policies"),
	)
	logPath := filepath.Join(state, "gatehouse.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	gh.Stdout, gh.Stderr = logFile, logFile
	if err := startGroup(gh); err != nil {
		return err
	}
	defer stopGroup(gh)
	exited := make(chan error, 1)
	go func() { exited <- gh.Wait() }()
	if err := waitHealthy(ctx, base, exited); err != nil {
		return fmt.Errorf("%w (see %s)", err, logPath)
	}

	var users strings.Builder
	for _, u := range hello.Users {
		fmt.Fprintf(&users, "    %-6s password %-9s one-time code %s  %s, groups %s\n", u.Login, u.Password, u.OTP, u.Email, strings.Join(u.Groups, ","))
	}
	fmt.Printf(`
Gatehouse demo is running.

  Open   %s/   (a legacy app behind Gatehouse)
  IdP    %s   (the local OpenID Provider)
  Log    %s   (audit lines: logger http.handlers.gatehouse.audit)

  Test users:
%s
  The certificate comes from Caddy's local CA, which the demo does not
  install: accept the browser's warning, or trust
  %s
  Try it: alice (staff) gets in. bob (contractor) is denied and asks for
  temporary access on the deny page; alice approves it at
  %[6]s/.gatehouse/approvals (she is asked for her one-time code
  first); bob reloads and is in, and sees the time left at
  %[6]s/.gatehouse/access. Grants: .demo/grants.db, policies: policies/.
  Idle logout after 15 minutes; sign out at %[6]s/.gatehouse/logout.

Ctrl-C stops everything.
`, base, hello.Issuer, logPath, users.String(),
		filepath.Join(state, "caddy", "pki", "authorities", "local", "root.crt"), base)

	select {
	case <-ctx.Done():
		log.Print("stopping")
	case err := <-exited:
		return fmt.Errorf("gatehouse exited: %v (see %s)", err, logPath)
	}
	return nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "caddyfile-examples", "legacy-app.Caddyfile")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("run the demo from the Gatehouse repository (./demo.sh)")
		}
		dir = parent
	}
}

func startGroup(cmd *exec.Cmd) error {
	// Children die with the demo, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	return cmd.Start()
}

func stopGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
}

func waitHealthy(ctx context.Context, base string, exited <-chan error) error {
	// Caddy's local CA signs the demo certificate; the health check does
	// not need to trust it.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // loopback health check only
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			return fmt.Errorf("gatehouse exited: %v", err)
		default:
		}
		if resp, err := c.Get(base + "/.gatehouse/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("gatehouse did not become healthy at %s", base)
}

var page = template.Must(template.New("app").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Acme HR (legacy)</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main>
<h1>Acme HR — a legacy app</h1>
<p>This app knows nothing of OIDC. It trusts the identity headers Gatehouse sets:</p>
<table>{{range .Headers}}<tr><th scope="row">{{.Name}}</th><td>{{.Value}}</td></tr>{{end}}</table>
<p>You asked for <code>{{.Path}}</code>. Try <a href="/reports/2026">a deep link</a>,
<a href="/admin/">the admin page</a> or <a href="/payslips/2026-11">a payslip</a> (both ask for
your one-time code), or <a href="/.gatehouse/logout">sign out</a>.</p>
</main></body></html>`))

// legacyApp shows what a legacy upstream receives.
func legacyApp() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		type header struct{ Name, Value string }
		var hs []header
		for name, vals := range r.Header {
			if strings.HasPrefix(name, "X-Remote-") {
				hs = append(hs, header{name, strings.Join(vals, " | ")})
			}
		}
		sort.Slice(hs, func(i, j int) bool { return hs[i].Name < hs[j].Name })
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, map[string]any{"Headers": hs, "Path": r.URL.RequestURI()})
	})
}
