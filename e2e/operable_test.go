package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOperable runs a node of the contractor-jit example (Redis, the
// shipped policies) as an ops team watches it: its metrics on Caddy's
// admin /metrics, its readiness while Redis goes away and comes back,
// and quiet health probes.
func TestOperable(t *testing.T) {
	e := startJIT(t)
	b := newBrowser(t, e.ghA, e.ghB)
	if p := b.login(e.nodeA+"/", "alice"); p.StatusCode != http.StatusOK {
		t.Fatalf("alice's sign-in: %d\n%s", p.StatusCode, fmtHops(b.hops))
	}
	for range 3 {
		b.navigate(e.nodeA + "/?n=1")
	}
	if p := b.fetch(http.MethodGet, e.nodeA+"/.gatehouse/readyz"); p.StatusCode != http.StatusOK ||
		!strings.Contains(p.Body, `"status":"ready"`) || !strings.Contains(p.Body, `"grants":"up"`) ||
		!strings.Contains(p.Body, `"primary":"up"`) || !strings.Contains(p.Body, `"revision":"`) {
		t.Errorf("readyz with everything up: %d %s", p.StatusCode, p.Body)
	}

	m := scrape(t, e.ghA)
	for _, want := range []string{
		`gatehouse_decisions_total{app="projects",reason="",result="allow"}`,
		`gatehouse_decisions_total{app="projects",reason="",result="login_ok"}`,
		`gatehouse_logins_total{app="projects",reason="",result="started"}`,
		`gatehouse_logins_total{app="projects",reason="",result="ok"}`,
		`gatehouse_decision_duration_seconds_count{app="projects",result="allow"}`,
		`gatehouse_policy_evaluations_total{app="projects",cache="miss"}`,
		`gatehouse_grant_store_up{store="` + storeURL(e.store) + `"}`,
		`gatehouse_grant_store_calls_total{op="lookup",result="ok",store="` + storeURL(e.store) + `"}`,
		`gatehouse_policy_reloads_total{policy="`,
		`gatehouse_policy_revision_info{policy="`,
		`gatehouse_grants_active{store="` + storeURL(e.store) + `"}`,
	} {
		if m.value(want) <= 0 && !strings.HasPrefix(want, "gatehouse_grants_active") && !strings.HasPrefix(want, "gatehouse_policy_reloads_total") {
			t.Errorf("no %s > 0 in /metrics", want)
		}
		if !m.has(want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if m.value(`gatehouse_decisions_total{app="projects",reason="",result="allow"}`) < 3 {
		t.Errorf("3 allowed requests, counted %v", m.value(`gatehouse_decisions_total{app="projects",reason="",result="allow"}`))
	}
	if strings.Contains(m.text, "alice") || strings.Contains(m.text, "n=1") || strings.Contains(m.text, "default-user") {
		t.Error("a metric label carries a user, a path or the store's credentials")
	}

	// Probes are not audited.
	for range 5 {
		b.fetch(http.MethodGet, e.nodeA+"/.gatehouse/healthz")
		b.fetch(http.MethodGet, e.nodeA+"/.gatehouse/readyz")
	}
	for _, l := range e.ghA.auditLines() {
		if p, _ := l["path"].(string); strings.HasPrefix(p, "/.gatehouse/healthz") || strings.HasPrefix(p, "/.gatehouse/readyz") {
			t.Fatalf("a probe was audited: %v", l)
		}
	}

	// Redis goes away: readiness says so (and nothing of where it was),
	// the store's gauge drops, its errors count; liveness does not care.
	e.redis.Stop()
	var body string
	if !eventually(10*time.Second, func() bool {
		p := b.fetch(http.MethodGet, e.nodeA+"/.gatehouse/readyz")
		body = p.Body
		return p.StatusCode == http.StatusServiceUnavailable && strings.Contains(p.Body, `"grants":"down"`)
	}) {
		t.Fatalf("readyz with Redis down: %s", body)
	}
	t.Logf("readyz with Redis down: 503 %s", strings.TrimSpace(body))
	if strings.Contains(body, "127.0.0.1") || strings.Contains(body, "refused") {
		t.Errorf("readyz tells where the store is or how it failed: %s", body)
	}
	if p := b.fetch(http.MethodGet, e.nodeA+"/.gatehouse/healthz"); p.StatusCode != http.StatusOK {
		t.Errorf("healthz with Redis down: %d", p.StatusCode)
	}
	b.navigate(e.nodeA + "/?n=2") // standing access is still served; the store call fails
	m = scrape(t, e.ghA)
	if v := m.value(`gatehouse_grant_store_up{store="` + storeURL(e.store) + `"}`); v != 0 {
		t.Errorf("grant_store_up with Redis down: %v", v)
	}
	if m.sum(`gatehouse_grant_store_calls_total{op="`, `result="error"`) == 0 {
		t.Error("no grant store errors counted with Redis down")
	}
	t.Logf("/metrics excerpt with Redis down:\n%s", m.excerpt("gatehouse_grant_store_up", "gatehouse_grant_store_calls_total", "gatehouse_decisions_total", "gatehouse_policy_revision_info"))

	e.redis.Start()
	if !eventually(15*time.Second, func() bool {
		p := b.fetch(http.MethodGet, e.nodeA+"/.gatehouse/readyz")
		body = p.Body
		return p.StatusCode == http.StatusOK
	}) {
		t.Fatalf("readyz after Redis came back: %s", body)
	}
	if !eventually(auditWait, func() bool {
		return strings.Contains(e.ghA.log.String(), `"msg":"not ready: a dependency is down"`) &&
			strings.Contains(e.ghA.log.String(), `"msg":"ready: a dependency is back"`)
	}) {
		t.Error("the log does not say when the store went down and came back")
	}
}

// TestLoginFailureIsDiagnosable: with a wrong client secret, every sign-in
// fails; the audit line and a WARN line say what the IdP answered
// (invalid_client), never the secret or the code.
func TestLoginFailureIsDiagnosable(t *testing.T) {
	port := freePort(t)
	base := fmt.Sprintf("https://localhost:%d", port)
	p := startIdP(t, idpClient{ClientID: "legacy", ClientSecret: "the-right-secret", RedirectURIs: []string{base + "/.gatehouse/callback"}})
	up := startUpstream(t)
	example, err := os.ReadFile("../caddyfile-examples/legacy-app.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	gh := startGatehouse(t, string(example), []string{"GATEHOUSE_SITE=" + base, "GATEHOUSE_ISSUER=" + p.Issuer,
		"GATEHOUSE_CLIENT_ID=legacy", "GATEHOUSE_CLIENT_SECRET=a-wrong-secret-value", "GATEHOUSE_COOKIE_SECRET=" + randomSecret(t),
		"GATEHOUSE_UPSTREAM=" + up.Listener.Addr().String()}, base)
	b := newBrowser(t, gh)
	page := b.login(base+"/x", "alice")
	if page.StatusCode != http.StatusUnauthorized {
		t.Fatalf("sign-in with a wrong client secret: %d\n%s", page.StatusCode, fmtHops(b.hops))
	}
	line := gh.waitAudit(t, auditLine("path", "/.gatehouse/callback", "result", "login_failed", "reason", "code_rejected"))
	if line == nil || line["idp_error"] != "invalid_client" || line["idp_status"] == nil {
		t.Fatalf("the audit line does not say what the IdP answered: %v", line)
	}
	t.Logf("audit: idp_status %v idp_error %v idp_error_description %q", line["idp_status"], line["idp_error"], line["idp_error_description"])
	if !eventually(auditWait, func() bool {
		return strings.Contains(gh.log.String(), `"msg":"the identity provider refused the authorization code at its token endpoint"`)
	}) {
		t.Error("no WARN line for the refused code")
	}
	code := regexp.MustCompile(`[?&]code=([^&"]+)`)
	for _, l := range strings.Split(gh.log.String(), "\n") {
		if strings.Contains(l, "a-wrong-secret-value") {
			t.Errorf("the log holds the client secret: %s", l)
		}
		if m := code.FindStringSubmatch(l); m != nil && len(m[1]) > 10 {
			t.Errorf("the log holds an authorization code: %s", l)
		}
	}
}

// TestMisconfigurationIsRefused: a matcher on gatehouse and a secret
// placeholder that resolves to nothing stop adapt/validate with a message
// that says what to do.
func TestMisconfigurationIsRefused(t *testing.T) {
	dir := t.TempDir()
	env := append(os.Environ(), "HOME="+dir, "GATEHOUSE_SITE=app.example.com", "GATEHOUSE_ISSUER=https://idp.invalid",
		"GATEHOUSE_CLIENT_ID=legacy", "GATEHOUSE_COOKIE_SECRET="+randomSecret(t), "GATEHOUSE_UPSTREAM=127.0.0.1:9")
	run := func(config string, env []string, args ...string) (string, error) {
		path := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(gatehouseBin, append(args, "--config", path, "--adapter", "caddyfile")...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	matched := "app.example.com {\n\tgatehouse /app/* {\n\t\tapp legacy\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n"
	out, err := run(matched, env, "adapt")
	if err == nil || !strings.Contains(out, "gatehouse takes no matcher (got /app/*)") || !strings.Contains(out, "public <paths...>") ||
		!strings.Contains(out, "Caddyfile:2") {
		t.Errorf("adapt of gatehouse /app/*: %v\n%s", err, out)
	}
	example, err := os.ReadFile("../caddyfile-examples/legacy-app.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	out, err = run(string(example), env, "validate") // GATEHOUSE_CLIENT_SECRET unset
	if err == nil || !strings.Contains(out, "client_secret {env.GATEHOUSE_CLIENT_SECRET} (set GATEHOUSE_CLIENT_SECRET)") {
		t.Errorf("validate with the client secret unset: %v\n%s", err, out)
	}
	out, err = run(strings.Replace(string(example), "\t\tapp legacy", "\t\tapp legacy\n\t\tisuer x", 1), env, "adapt")
	if err == nil || !strings.Contains(out, `did you mean \"issuer\"?`) {
		t.Errorf("adapt with a misspelt subdirective: %v\n%s", err, out)
	}
}

// metricsText is one scrape of /metrics.
type metricsText struct{ text string }

// scrape reads Caddy's admin /metrics of a node.
func scrape(t *testing.T, g *gatehouse) metricsText {
	t.Helper()
	resp, err := http.Get("http://" + g.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	return metricsText{string(b)}
}

// has reports whether a series starting with prefix exists.
func (m metricsText) has(prefix string) bool {
	for _, l := range strings.Split(m.text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// value is the first series starting with prefix (0 if none).
func (m metricsText) value(prefix string) float64 {
	return m.sum(prefix, "")
}

// sum adds the series that start with prefix and contain also.
func (m metricsText) sum(prefix, also string) float64 {
	var total float64
	for _, l := range strings.Split(m.text, "\n") {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, also) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += v
			if also == "" {
				return total
			}
		}
	}
	return total
}

// excerpt is the lines of the named metric families.
func (m metricsText) excerpt(names ...string) string {
	var out []string
	for _, l := range strings.Split(m.text, "\n") {
		for _, n := range names {
			if strings.HasPrefix(l, n+"{") || strings.HasPrefix(l, n+" ") {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

// storeURL is a store URL as metrics label it: no credentials, no query.
func storeURL(raw string) string {
	if i := strings.Index(raw, "@"); i > 0 {
		raw = raw[:strings.Index(raw, "://")+3] + raw[i+1:]
	}
	raw, _, _ = strings.Cut(raw, "?")
	return raw
}
