package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// bclCaddyfile is a site with every signed-in user allowed, its grant
// store shared by the nodes.
const bclCaddyfile = `{$GATEHOUSE_SITE} {
	gatehouse {
		app bcl
		issuer {env.GATEHOUSE_ISSUER}
		client_id bcl
		client_secret {env.GATEHOUSE_CLIENT_SECRET}
		cookie_secret {env.GATEHOUSE_COOKIE_SECRET}
		scopes openid email profile
		grants {env.GATEHOUSE_GRANTS}
	}
	reverse_proxy {env.GATEHOUSE_UPSTREAM}
}
`

// tokenRecorder is where the test IdP copies each back-channel logout
// POST it made (IDP_BACKCHANNEL_COPY), so the test can replay it.
type tokenRecorder struct {
	*httptest.Server
	mu     sync.Mutex
	tokens []string
}

func startTokenRecorder(t *testing.T) *tokenRecorder {
	r := &tokenRecorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_ = req.ParseForm()
		r.mu.Lock()
		r.tokens = append(r.tokens, req.PostForm.Get("logout_token"))
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *tokenRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.tokens...)
}

// bclEnv is two Gatehouse nodes sharing a Redis, and the test IdP with
// node A's back-channel logout URI registered.
type bclEnv struct {
	idp          *idp
	rec          *tokenRecorder
	nodeA, nodeB string
	ghA, ghB     *gatehouse
	server       *http.Client // trusts both nodes' CAs: an IdP's own client
}

func startBackchannel(t *testing.T) *bclEnv {
	e := &bclEnv{rec: startTokenRecorder(t)}
	e.nodeA = fmt.Sprintf("https://localhost:%d", freePort(t))
	e.nodeB = fmt.Sprintf("https://localhost:%d", freePort(t))
	caFile := filepath.Join(t.TempDir(), "gateways-ca.pem")
	e.idp = startIdPWith(t, []string{"IDP_BACKCHANNEL_CA=" + caFile, "IDP_BACKCHANNEL_COPY=" + e.rec.URL},
		idpClient{ClientID: "bcl", ClientSecret: "bcl-secret",
			RedirectURIs:                     []string{e.nodeA + "/.gatehouse/callback", e.nodeB + "/.gatehouse/callback"},
			PostLogoutRedirectURIs:           []string{e.nodeA + "/.gatehouse/logout", e.nodeB + "/.gatehouse/logout"},
			BackchannelLogoutURI:             e.nodeA + "/.gatehouse/backchannel-logout",
			BackchannelLogoutSessionRequired: true})
	up := startUpstream(t)
	store := startRedis(t).URL()
	secret := randomSecret(t)
	env := func(site string) []string {
		return []string{"GATEHOUSE_SITE=" + site, "GATEHOUSE_ISSUER=" + e.idp.Issuer, "GATEHOUSE_CLIENT_SECRET=bcl-secret",
			"GATEHOUSE_COOKIE_SECRET=" + secret, "GATEHOUSE_GRANTS=" + store, "GATEHOUSE_UPSTREAM=" + up.Listener.Addr().String()}
	}
	e.ghA = startGatehouse(t, bclCaddyfile, env(e.nodeA), e.nodeA)
	e.ghB = startGatehouse(t, bclCaddyfile, env(e.nodeB), e.nodeB)
	// The IdP trusts the nodes' local CAs for its back-channel POSTs only.
	if err := os.WriteFile(caFile, append(append([]byte{}, e.ghA.rootPEM...), e.ghB.rootPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.ghA.rootPEM)
	roots.AppendCertsFromPEM(e.ghB.rootPEM)
	e.server = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	return e
}

// post sends a back-channel logout request as an IdP would, and returns
// the status and the decoded error body (nil for none).
func (e *bclEnv) post(t *testing.T, node, contentType, body string) (int, http.Header, map[string]string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, node+"/.gatehouse/backchannel-logout", strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	resp, err := e.server.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]string
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Errorf("%s: not JSON: %s", node, b)
		}
	}
	return resp.StatusCode, resp.Header, out
}

// apiStatus is a background request's status and JSON reason with the
// cookies of a browser, through a client of its own (safe to use while
// the browser navigates).
func apiStatus(c *http.Client, rawURL string, cookie *http.Cookie) (int, string, error) {
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	req.Header.Set("Accept", "application/json")
	req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct{ Reason string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Reason, nil
}

// TestBackchannelLogout: alice signs in on two nodes sharing Redis (one
// IdP session), and on another device (another IdP session); she logs
// out at the IdP; the IdP POSTs a logout token to node A over HTTPS, and
// her sessions of that IdP session are refused on both nodes within a
// second, while her other device stays signed in. The token cannot be
// replayed on either node, and hostile requests are refused.
func TestBackchannelLogout(t *testing.T) {
	e := startBackchannel(t)
	b := newBrowser(t, e.ghA, e.ghB)
	if p := b.login(e.nodeA+"/a", "alice"); p.StatusCode != http.StatusOK || p.echo(t).Path != "/a" {
		t.Fatalf("sign-in at node A: %d %s", p.StatusCode, p.Request.URL)
	}
	// The IdP's single sign-on signs her in at node B: the same IdP
	// session.
	if p := b.navigate(e.nodeB + "/b"); p.StatusCode != http.StatusOK || p.echo(t).Path != "/b" {
		t.Fatalf("sign-in at node B: %d %s\n%s", p.StatusCode, p.Request.URL, fmtHops(b.hops))
	}
	other := newBrowser(t, e.ghA, e.ghB)
	other.login(e.nodeA+"/c", "alice")
	cookieA, cookieB := b.cookie(e.nodeA, "__Host-gatehouse"), b.cookie(e.nodeB, "__Host-gatehouse")
	otherA := other.cookie(e.nodeA, "__Host-gatehouse")
	if cookieA == nil || cookieB == nil || otherA == nil {
		t.Fatal("no session cookies")
	}
	t.Logf("session cookie with the IdP session's key: %d bytes (name=value)", len(cookieA.Name)+1+len(cookieA.Value))
	for name, c := range map[string][]any{"node A": {e.nodeA, cookieA}, "node B": {e.nodeB, cookieB}, "other device": {e.nodeA, otherA}} {
		if st, _, err := apiStatus(e.server, c[0].(string)+"/api", c[1].(*http.Cookie)); st != http.StatusOK || err != nil {
			t.Fatalf("%s before the logout: %d %v", name, st, err)
		}
	}

	// Node B is asked all along: the first refusal's time is measured
	// against the moment node A answered the IdP.
	refusedB := make(chan time.Time, 1)
	stop := make(chan struct{})
	var pollErr error
	go func() {
		defer close(refusedB)
		for {
			select {
			case <-stop:
				return
			default:
			}
			st, reason, err := apiStatus(e.server, e.nodeB+"/api", cookieB)
			now := time.Now()
			if err != nil {
				pollErr = err
				return
			}
			if st != http.StatusOK {
				if st != http.StatusUnauthorized || reason != "ended_at_idp" {
					pollErr = fmt.Errorf("node B answered %d %q", st, reason)
				}
				refusedB <- now
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// She logs out at the IdP (its end-session page, as from any other
	// application), confirming "sign me out".
	p := b.navigate(e.idp.Issuer + "/session/end?client_id=bcl")
	p = b.submitForm(p, url.Values{"logout": {"yes"}})
	mustStatus(t, p, http.StatusOK)
	if !strings.Contains(p.Body, "signed out") {
		t.Fatalf("the IdP's logout:\n%s", p.Body)
	}
	done := time.Now()
	var at time.Time
	select {
	case at = <-refusedB:
	case <-time.After(time.Second):
		close(stop)
		t.Fatalf("node B still serves alice's session 1 s after the IdP's logout (IdP log:\n%s)", e.idp.log)
	}
	if pollErr != nil {
		t.Fatal(pollErr)
	}
	line := findAudit(auditLine("reason", "backchannel_logout"), e.ghA)
	if line == nil {
		t.Fatalf("no back-channel logout at node A; IdP log:\n%s", e.idp.log)
	}
	if line["result"] != "logout" || line["user"] != "alice" || line["path"] != "/.gatehouse/backchannel-logout" {
		t.Errorf("node A's audit line: %v", line)
	}
	ts, _ := line["ts"].(float64)
	answered := time.Unix(0, int64(ts*1e9))
	t.Logf("node B refused the session %s after node A answered the IdP (%s after the IdP's logout page came back)",
		at.Sub(answered).Round(time.Millisecond), at.Sub(done).Round(time.Millisecond))
	if d := at.Sub(answered); math.Abs(float64(d)) > float64(time.Second) {
		t.Errorf("node B took %s to refuse the session", d)
	}
	ev := findAudit(auditLine("msg", "back-channel logout"), e.ghA)
	if ev == nil || ev["user"] != "alice" || ev["iss"] != e.idp.Issuer || len(fmt.Sprint(ev["idp_session"])) != 32 {
		t.Errorf("node A's event line: %v", ev)
	}
	if st, reason, _ := apiStatus(e.server, e.nodeA+"/api", cookieA); st != http.StatusUnauthorized || reason != "ended_at_idp" {
		t.Errorf("node A after the logout: %d %q", st, reason)
	}
	if st, _, _ := apiStatus(e.server, e.nodeA+"/api", otherA); st != http.StatusOK {
		t.Errorf("alice's other device (another IdP session) after the logout: %d", st)
	}
	// A navigation is sent to sign in again, asking for the password.
	nav := b.noRedirects()
	req, _ := http.NewRequest(http.MethodGet, e.nodeB+"/b", nil)
	setNavigation(req)
	if resp, err := nav.Do(req); err != nil || resp.StatusCode != http.StatusFound ||
		!strings.HasPrefix(resp.Header.Get("Location"), e.idp.Issuer) || !strings.Contains(resp.Header.Get("Location"), "prompt=login") {
		t.Errorf("a navigation at node B after the logout: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The token the IdP sent, replayed: refused on both nodes.
	tokens := e.rec.all()
	if len(tokens) != 1 || strings.Count(tokens[0], ".") != 2 {
		t.Fatalf("the IdP sent %d logout tokens", len(tokens))
	}
	tok := tokens[0]
	for _, node := range []string{e.nodeB, e.nodeA} {
		st, hdr, body := e.post(t, node, "application/x-www-form-urlencoded", url.Values{"logout_token": {tok}}.Encode())
		if st != http.StatusBadRequest || body["error"] != "invalid_request" || body["error_description"] == "" || hdr.Get("Cache-Control") != "no-store" {
			t.Errorf("the token replayed at %s: %d %v %v", node, st, hdr, body)
		}
		if findAudit(auditLine("reason", "logout_token_replayed", "result", "logout_refused"), e.ghA, e.ghB) == nil {
			t.Errorf("no audit line for the replay at %s", node)
		}
	}

	// Hostile requests, cheap to make from the real token.
	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"alice"`, `"carol"`, 1)))
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"logout+jwt"}`))
	form := func(tok string) string { return url.Values{"logout_token": {tok}}.Encode() }
	for _, c := range []struct {
		name, contentType, body, reason string
	}{
		{"another user's claims under the signature", "application/x-www-form-urlencoded", form(parts[0] + "." + tampered + "." + parts[2]), "logout_token_signature"},
		{"alg none", "application/x-www-form-urlencoded", form(none + "." + parts[1] + "."), "logout_token_alg"},
		{"JSON", "application/json", `{"logout_token":"` + tok + `"}`, "backchannel_content_type"},
		{"a body over 32 KiB", "application/x-www-form-urlencoded", form(tok) + "&pad=" + strings.Repeat("x", 40<<10), "backchannel_body"},
		{"no token", "application/x-www-form-urlencoded", "token=" + tok, "logout_token_missing"},
	} {
		st, _, body := e.post(t, e.nodeB, c.contentType, c.body)
		if st != http.StatusBadRequest || body["error"] != "invalid_request" {
			t.Errorf("%s: %d %v", c.name, st, body)
		}
		if findAudit(auditLine("reason", c.reason), e.ghB) == nil {
			t.Errorf("%s: no audit line with reason %s", c.name, c.reason)
		}
	}
	resp, err := e.server.Get(e.nodeB + "/.gatehouse/backchannel-logout")
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if st, _, _ := apiStatus(e.server, e.nodeA+"/api", otherA); st != http.StatusOK {
		t.Errorf("alice's other device after the hostile requests: %d", st)
	}

	// She signs in again (the IdP asks for her password): a new session,
	// on both nodes.
	p = b.navigate(e.nodeB + "/again")
	p = b.submitLogin(p, "alice")
	if p.StatusCode != http.StatusOK || p.echo(t).Path != "/again" {
		t.Errorf("signing in again: %d %s", p.StatusCode, p.Request.URL)
	}
}
