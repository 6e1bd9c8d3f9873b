package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// scimEnv is the contractor-jit example on two nodes sharing Redis, with
// the SCIM service on (link email), and a client that calls it as a
// provisioning system would.
type scimEnv struct {
	*jitEnv
	token  string
	client *http.Client
}

func startSCIM(t *testing.T) *scimEnv {
	token := randomSecret(t)
	e := &scimEnv{jitEnv: startJITWith(t, "scim {\n\t\t\ttoken "+token+"\n\t\t}", "", ""), token: token}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.ghA.rootPEM)
	roots.AppendCertsFromPEM(e.ghB.rootPEM)
	e.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	return e
}

// scimScript is the requests a provisioning system sends, in the shapes
// its documentation shows (e2e/testdata/scim/*.json, each naming its
// source), with {{placeholders}} for the test user's values.
type scimScript struct {
	Source   string
	Headers  map[string]string
	Requests []struct {
		Name, Method, Path string
		Body               json.RawMessage
	}
	vars map[string]string
}

func loadSCIMScript(t *testing.T, file string, vars map[string]string) *scimScript {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := &scimScript{vars: vars}
	if err := json.Unmarshal(b, s); err != nil || s.Source == "" {
		t.Fatalf("%s: %v", file, err)
	}
	return s
}

// scimAnswer is what the SCIM service answered.
type scimAnswer struct {
	Status int
	Header http.Header
	Doc    map[string]any
	Raw    string
	At     time.Time // when it came back
}

// send sends the script's request called name to node.
func (s *scimScript) send(t *testing.T, e *scimEnv, node, name string) scimAnswer {
	t.Helper()
	for _, r := range s.Requests {
		if r.Name != name {
			continue
		}
		fill := func(v string) string {
			for k, val := range s.vars {
				v = strings.ReplaceAll(v, "{{"+k+"}}", val)
			}
			return v
		}
		path, query, _ := strings.Cut(fill(r.Path), "?")
		target := node + "/.gatehouse/scim/v2" + path
		if query != "" {
			q, err := url.ParseQuery(query)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			target += "?" + q.Encode()
		}
		var body io.Reader
		if len(r.Body) > 0 {
			body = strings.NewReader(fill(string(r.Body)))
		}
		req, _ := http.NewRequest(r.Method, target, body)
		for k, v := range s.Headers {
			if k != "Content-Type" || body != nil {
				req.Header.Set(k, v)
			}
		}
		req.Header.Set("Authorization", "Bearer "+e.token)
		a := e.do(t, req)
		if strings.Contains(a.Raw, e.token) {
			t.Errorf("%s: the answer holds the token", name)
		}
		return a
	}
	t.Fatalf("no request %q in the script", name)
	return scimAnswer{}
}

// do sends a SCIM request and reads the answer.
func (e *scimEnv) do(t *testing.T, req *http.Request) scimAnswer {
	t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := scimAnswer{Status: resp.StatusCode, Header: resp.Header, Raw: string(b), At: time.Now()}
	if len(b) > 0 {
		if ct := resp.Header.Get("Content-Type"); ct != "application/scim+json" {
			t.Errorf("%s %s: Content-Type %q", req.Method, req.URL.Path, ct)
		}
		if err := json.Unmarshal(b, &a.Doc); err != nil {
			t.Errorf("%s %s: not JSON: %s", req.Method, req.URL.Path, b)
		}
	}
	return a
}

// must checks an answer's status.
func (a scimAnswer) must(t *testing.T, what string, status int) scimAnswer {
	t.Helper()
	if a.Status != status {
		t.Fatalf("%s: %d, want %d\n%s", what, a.Status, status, a.Raw)
	}
	return a
}

// signedIn is a browser signed in as user on both nodes, with the
// session cookie each node set.
type signedIn struct {
	b                *browser
	user             string
	cookieA, cookieB *http.Cookie
}

func (e *scimEnv) signIn(t *testing.T, user string) *signedIn {
	t.Helper()
	b := newBrowser(t, e.ghA, e.ghB)
	mustStatus(t, b.login(e.nodeA+"/", user), http.StatusOK)
	mustStatus(t, b.navigate(e.nodeB+"/"), http.StatusOK) // the IdP's single sign-on
	s := &signedIn{b: b, user: user, cookieA: b.cookie(e.nodeA, "__Host-gatehouse"), cookieB: b.cookie(e.nodeB, "__Host-gatehouse")}
	if s.cookieA == nil || s.cookieB == nil {
		t.Fatalf("%s has no session cookies", user)
	}
	return s
}

// refusedWithin sends the deactivation (act) while both nodes are asked
// all along with the user's sessions, and returns how long after act's
// answer each node first refused them (401 revoked; negative when a
// node refused before the answer reached the test). It fails the test
// past within.
func (e *scimEnv) refusedWithin(t *testing.T, s *signedIn, within time.Duration, act func() scimAnswer) (nodeA, nodeB time.Duration) {
	t.Helper()
	type refusal struct {
		at  time.Time
		err error
	}
	poll := func(node string, c *http.Cookie, out chan<- refusal, stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			st, reason, err := apiStatus(e.client, node+"/", c)
			now := time.Now()
			switch {
			case err != nil:
				out <- refusal{now, err}
				return
			case st != http.StatusOK:
				if st != http.StatusUnauthorized || reason != "revoked" {
					err = fmt.Errorf("%s answered %d %q", node, st, reason)
				}
				out <- refusal{now, err}
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, c := range []struct {
		node   string
		cookie *http.Cookie
	}{{e.nodeA, s.cookieA}, {e.nodeB, s.cookieB}} {
		if st, _, err := apiStatus(e.client, c.node+"/", c.cookie); st != http.StatusOK || err != nil {
			t.Fatalf("%s before the deactivation at %s: %d %v", s.user, c.node, st, err)
		}
	}
	stop := make(chan struct{})
	defer close(stop)
	ra, rb := make(chan refusal, 1), make(chan refusal, 1)
	go poll(e.nodeA, s.cookieA, ra, stop)
	go poll(e.nodeB, s.cookieB, rb, stop)
	sent := time.Now()
	answered := act().At
	t.Logf("the deactivation took %s to answer", answered.Sub(sent).Round(time.Millisecond))
	deadline := time.After(within + 100*time.Millisecond)
	var got [2]refusal
	for i, ch := range []chan refusal{ra, rb} {
		select {
		case got[i] = <-ch:
		case <-deadline:
			t.Fatalf("%s's session still served on node %c %s after the deactivation", s.user, "AB"[i], within)
		}
		if got[i].err != nil {
			t.Fatalf("node %c: %v", "AB"[i], got[i].err)
		}
	}
	nodeA, nodeB = got[0].at.Sub(answered), got[1].at.Sub(answered)
	for i, d := range []time.Duration{nodeA, nodeB} {
		if d > within {
			t.Errorf("node %c refused %s's session %s after the deactivation, over %s", "AB"[i], s.user, d, within)
		}
	}
	return nodeA, nodeB
}

// signInRefused: a new sign-in as s.user ends on the refusal page,
// and the node says why.
func (e *scimEnv) signInRefused(t *testing.T, s *signedIn, node string, g *gatehouse) {
	t.Helper()
	p := s.b.navigate(node + "/work/again")
	if isLoginForm(p) {
		p = s.b.submitLogin(p, s.user)
	}
	if p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "deactivated") {
		t.Fatalf("%s signing in at %s while inactive: %d\n%s", s.user, node, p.StatusCode, p.Body)
	}
	if g.waitAudit(t, auditLine("reason", "deprovisioned", "result", "login_failed", "user", s.user)) == nil {
		t.Errorf("no deprovisioned line for %s at %s", s.user, node)
	}
}

// signInAgain: s.user signs in again at node and reaches the app; the
// new session is kept on both nodes.
func (e *scimEnv) signInAgain(t *testing.T, s *signedIn, node string, since time.Time) {
	t.Helper()
	// The deactivation revoked every session made up to its second
	// (sessions record whole seconds): a sign-in within that second
	// would be revoked too, as it should be.
	if d := time.Until(time.Unix(since.Unix()+1, 0)); d > 0 {
		time.Sleep(d)
	}
	p := s.b.navigate(node + "/work/back")
	if isLoginForm(p) {
		p = s.b.submitLogin(p, s.user)
	}
	if p.StatusCode != http.StatusOK || p.echo(t).Path != "/work/back" {
		t.Fatalf("%s signing in at %s when active again: %d\n%s", s.user, node, p.StatusCode, p.Body)
	}
	s.cookieA, s.cookieB = s.b.cookie(e.nodeA, "__Host-gatehouse"), s.b.cookie(e.nodeB, "__Host-gatehouse")
}

// TestSCIMProvisioning: two provisioning runs, each with the requests
// its system's documentation shows, against two nodes on Redis. Entra
// ID (to node A) creates alice, finds her, updates her and disables
// her: both nodes refuse her session within a second, and she cannot
// sign in; enabled again she can; disabled again, then deleted, she
// cannot. Okta (to node B) does the same with carol, with its PUT and
// its PATCH of a value object. Then hostile requests.
func TestSCIMProvisioning(t *testing.T) {
	e := startSCIM(t)

	t.Run("Entra ID provisions and disables alice", func(t *testing.T) {
		s := loadSCIMScript(t, "testdata/scim/entra-id.json",
			map[string]string{"userName": "alice@example.com", "email": "alice@example.com", "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"})
		alice := e.signIn(t, "alice")
		A, B := e.nodeA, e.nodeB
		if a := s.send(t, e, A, "Get User by query - Zero results").must(t, "search", 200); a.Doc["totalResults"] != 0.0 {
			t.Errorf("search before: %s", a.Raw)
		}
		a := s.send(t, e, A, "Create User").must(t, "Create User", 201)
		id, _ := a.Doc["id"].(string)
		meta, _ := a.Doc["meta"].(map[string]any)
		if id == "" || a.Header.Get("Location") != A+"/.gatehouse/scim/v2/Users/"+id || meta["location"] != a.Header.Get("Location") ||
			meta["resourceType"] != "User" || meta["version"] != `W/"1"` || meta["created"] == nil || a.Doc["active"] != true {
			t.Fatalf("created: %v %s", a.Header, a.Raw)
		}
		s.vars["id"] = id
		if a := s.send(t, e, B, "Get User").must(t, "Get User on node B", 200); a.Doc["userName"] != "alice@example.com" || strings.Contains(a.Raw, "givenName") {
			t.Errorf("Get User: %s", a.Raw)
		}
		if a := s.send(t, e, A, "Get User by query").must(t, "search", 200); a.Doc["totalResults"] != 1.0 || a.Doc["itemsPerPage"] != 1.0 {
			t.Errorf("search after: %s", a.Raw)
		}
		s.send(t, e, A, "Update User [Multi-valued properties]").must(t, "multi-valued update", 200)
		s.send(t, e, A, "Update User [Single-valued properties]").must(t, "single-valued update", 200)

		var disabled scimAnswer
		dA, dB := e.refusedWithin(t, alice, time.Second, func() scimAnswer {
			disabled = s.send(t, e, A, "Disable User").must(t, "Disable User", 200)
			return disabled
		})
		t.Logf("Entra ID's Disable User answered by node A: alice's session refused on node A %s and on node B %s later",
			dA.Round(time.Millisecond), dB.Round(time.Millisecond))
		if disabled.Doc["active"] != false {
			t.Errorf("disabled: %s", disabled.Raw)
		}
		if l := e.ghA.waitAudit(t, auditLine("msg", "user de-provisioned", "user", "alice", "actor", "scim")); l == nil || l["scim_id"] != id {
			t.Errorf("no user de-provisioned line: %v", l)
		}
		if e.ghA.waitAudit(t, auditLine("msg", "decision", "reason", "scim_deactivated", "path", "/.gatehouse/scim/v2/Users/"+id)) == nil {
			t.Error("no scim_deactivated decision line")
		}
		e.signInRefused(t, alice, B, e.ghB)

		s.send(t, e, A, "Enable User (variant: a value object, \"True\" as a string)").must(t, "Enable User", 200)
		e.signInAgain(t, alice, B, disabled.At)
		mustStatus(t, alice.b.navigate(A+"/"), http.StatusOK)
		alice.cookieA = alice.b.cookie(A, "__Host-gatehouse")

		dA, dB = e.refusedWithin(t, alice, time.Second, func() scimAnswer {
			return s.send(t, e, B, "Disable User (variant: \"False\" as a string)").must(t, "Disable User with a string", 200)
		})
		t.Logf("disabled again at node B: refused on node A %s and on node B %s later", dA.Round(time.Millisecond), dB.Round(time.Millisecond))
		if a := s.send(t, e, A, "Delete User"); a.Status != http.StatusNoContent || a.Raw != "" {
			t.Fatalf("Delete User: %d %s", a.Status, a.Raw)
		}
		s.send(t, e, B, "Get User").must(t, "Get User after Delete User", 404)
		e.signInRefused(t, alice, A, e.ghA)
	})

	t.Run("Okta provisions, deactivates and reactivates carol", func(t *testing.T) {
		s := loadSCIMScript(t, "testdata/scim/okta.json",
			map[string]string{"userName": "carol@example.com", "email": "carol@example.com", "externalId": "00ujl29u0le5T6Aj10h7"})
		carol := e.signIn(t, "carol")
		A, B := e.nodeA, e.nodeB
		if a := s.send(t, e, B, "Test the connection").must(t, "connection", 200); a.Doc["schemas"].([]any)[0] != "urn:ietf:params:scim:api:messages:2.0:ListResponse" {
			t.Errorf("connection: %s", a.Raw)
		}
		s.send(t, e, B, "Determine if the user already exists").must(t, "exists", 200)
		a := s.send(t, e, B, "Create the user").must(t, "create", 201)
		s.vars["id"], _ = a.Doc["id"].(string)
		if strings.Contains(a.Raw, "1mz050nq") || strings.Contains(a.Raw, "password") || strings.Contains(a.Raw, "locale") {
			t.Errorf("attributes Gatehouse does not keep came back: %s", a.Raw)
		}
		s.send(t, e, A, "Retrieve a specific user").must(t, "retrieve", 200)
		if a := s.send(t, e, B, "Update a specific user (PUT)").must(t, "PUT", 200); a.Doc["active"] != true || a.Header.Get("ETag") != `W/"2"` {
			t.Errorf("PUT: %v %s", a.Header, a.Raw)
		}
		var deactivated scimAnswer
		dA, dB := e.refusedWithin(t, carol, time.Second, func() scimAnswer {
			deactivated = s.send(t, e, B, "Deactivate the user").must(t, "deactivate", 200)
			return deactivated
		})
		t.Logf("Okta's deactivation answered by node B: carol's session refused on node A %s and on node B %s later",
			dA.Round(time.Millisecond), dB.Round(time.Millisecond))
		e.signInRefused(t, carol, A, e.ghA)
		s.send(t, e, B, "Reactivate the user").must(t, "reactivate", 200)
		if e.ghB.waitAudit(t, auditLine("msg", "scim user reactivated", "user_name", "carol@example.com")) == nil {
			t.Error("no scim user reactivated line")
		}
		e.signInAgain(t, carol, A, deactivated.At)
		a = s.send(t, e, B, "Import users").must(t, "import", 200)
		if res, _ := a.Doc["Resources"].([]any); len(res) != 1 || res[0].(map[string]any)["userName"] != "carol@example.com" {
			t.Errorf("import (alice was deleted, carol is active): %s", a.Raw)
		}
		for _, g := range []*gatehouse{e.ghA, e.ghB} {
			if strings.Contains(g.log.String(), "1mz050nq") {
				t.Error("Okta's password reached the log")
			}
		}
	})

	t.Run("hostile requests", func(t *testing.T) {
		A := e.nodeA
		user := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"erin@contractor.example"`
		for _, c := range []struct {
			name, method, path, auth, contentType, body string
			status                                      int
			scimType, reason                            string
		}{
			{"no token", "GET", "/Users", "-", "", "", 401, "", "scim_unauthorized"},
			{"a wrong token", "GET", "/Users", "Bearer " + randomSecret(t), "", "", 401, "", "scim_unauthorized"},
			{"the token as Basic", "GET", "/Users", "Basic " + e.token, "", "", 401, "", "scim_unauthorized"},
			{"a body over 64 KiB", "POST", "/Users", "", "", user + `,"nickName":"` + strings.Repeat("x", 65<<10) + `"}`, 413, "", "scim_too_large"},
			{"malformed JSON", "POST", "/Users", "", "", user + `,"active":}`, 400, "invalidSyntax", "scim_invalid"},
			{"a malformed filter", "GET", "/Users?filter=" + url.QueryEscape(`userName eq erin`), "", "", "", 400, "invalidFilter", "scim_invalid"},
			{"a filter Gatehouse does not answer", "GET", "/Users?filter=" + url.QueryEscape(`emails[type eq "work"].value eq "a"`), "", "", "", 400, "invalidFilter", "scim_invalid"},
			{"a user that does not exist", "GET", "/Users/nobody", "", "", "", 404, "", "scim_not_found"},
			{"PATCH of a user that does not exist", "PATCH", "/Users/nobody", "", "", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`, 404, "", "scim_not_found"},
			{"a form", "POST", "/Users", "", "application/x-www-form-urlencoded", "userName=erin", 415, "", "scim_content_type"},
			{"DELETE of every user", "DELETE", "/Users", "", "", "", 405, "", "method_not_allowed"},
			{"POST to the configuration", "POST", "/ServiceProviderConfig", "", "", "{}", 405, "", "method_not_allowed"},
			{"Groups", "GET", "/Groups", "", "", "", 404, "", "scim_not_found"},
		} {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req, _ := http.NewRequest(c.method, A+"/.gatehouse/scim/v2"+c.path, body)
			switch c.auth {
			case "":
				req.Header.Set("Authorization", "Bearer "+e.token)
			case "-":
			default:
				req.Header.Set("Authorization", c.auth)
			}
			if c.body != "" {
				req.Header.Set("Content-Type", "application/scim+json")
			}
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			a := e.do(t, req)
			if a.Status != c.status || a.Doc["status"] != fmt.Sprint(c.status) || a.Doc["detail"] == nil ||
				(c.scimType != "" && a.Doc["scimType"] != c.scimType) || a.Doc["schemas"].([]any)[0] != "urn:ietf:params:scim:api:messages:2.0:Error" {
				t.Errorf("%s: %d %s", c.name, a.Status, a.Raw)
			}
			if c.status == 401 && a.Header.Get("WWW-Authenticate") == "" || c.status == 405 && a.Header.Get("Allow") == "" {
				t.Errorf("%s: headers %v", c.name, a.Header)
			}
			if e.ghA.waitAudit(t, auditLine("msg", "decision", "reason", c.reason, "method", c.method)) == nil {
				t.Errorf("%s: no decision line with reason %s", c.name, c.reason)
			}
		}
		// Attributes Gatehouse does not keep are accepted and dropped.
		req, _ := http.NewRequest(http.MethodPost, A+"/.gatehouse/scim/v2/Users", bytes.NewBufferString(user+
			`,"nickName":"E","x509Certificates":[{"value":"MIIB"}],"urn:example:custom":{"level":9}}`))
		req.Header.Set("Authorization", "Bearer "+e.token)
		req.Header.Set("Content-Type", "application/json")
		if a := e.do(t, req).must(t, "unknown attributes", 201); strings.Contains(a.Raw, "nickName") || strings.Contains(a.Raw, "custom") {
			t.Errorf("unknown attributes kept: %s", a.Raw)
		}
		for _, g := range []*gatehouse{e.ghA, e.ghB} {
			if strings.Contains(g.log.String(), e.token) {
				t.Error("the SCIM token reached the log")
			}
		}
	})

	// The evidence export names the leavers SCIM de-provisioned.
	t.Run("the evidence export shows the SCIM de-provisionings", func(t *testing.T) {
		rows := e.evidenceRows(t)
		seen := map[string]bool{}
		for _, r := range rows {
			ev, _ := r["event"].(string)
			if ev == "user de-provisioned" && r["actor"] == "scim" {
				seen["de-provisioned by scim"] = true
			}
			seen[ev] = true
		}
		for _, want := range []string{"scim user created", "scim user deactivated", "scim user reactivated", "de-provisioned by scim"} {
			if !seen[want] {
				t.Errorf("the evidence export has no %q row", want)
			}
		}
	})
}
