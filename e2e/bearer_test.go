package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// apiResource is the API's resource indicator (and the tokens' aud) in
// caddyfile-examples/api-and-browser.Caddyfile.
const apiResource = "https://orders.example.com/api"

// ordersPolicy lets the reporting service read orders, and staff use
// everything in a browser or through the mobile app.
const ordersPolicy = `package gatehouse

default decision := {"allow": false, "reason": "not allowed"}

decision := {"allow": true} if {
	input.principal.kind == "service"
	input.token.client_id == "reporting"
	"orders:read" in input.token.scopes
	startswith(input.request.path_lower, "/api/orders")
}

decision := {"allow": true} if {
	input.principal.kind == "user"
	"staff" in input.user.groups
}

default approval := {"may_approve": false, "auto_approve": false}
`

// bearerEnv is two nodes of the api-and-browser example on one Redis,
// with an IdP that issues access tokens for the API.
type bearerEnv struct {
	idp, other   *idp
	nodeA, nodeB string
	ghA, ghB     *gatehouse
	store        string
	up           *upstream
}

func startBearer(t *testing.T) *bearerEnv {
	t.Helper()
	e := &bearerEnv{}
	e.nodeA = fmt.Sprintf("https://localhost:%d", freePort(t))
	e.nodeB = fmt.Sprintf("https://localhost:%d", freePort(t))
	env := []string{"IDP_API_RESOURCES=" + apiResource + ",https://other.example/api"}
	e.idp = startIdPWith(t, env,
		idpClient{ClientID: "orders", ClientSecret: "orders-secret", RedirectURIs: []string{e.nodeA + "/.gatehouse/callback", e.nodeB + "/.gatehouse/callback"}},
		idpClient{ClientID: "reporting", ClientSecret: "reporting-secret", RedirectURIs: []string{"http://127.0.0.1:9/cb"}, GrantTypes: []string{"client_credentials", "authorization_code"}},
		idpClient{ClientID: "short-lived", ClientSecret: "short-secret", RedirectURIs: []string{"http://127.0.0.1:9/cb"}, GrantTypes: []string{"client_credentials", "authorization_code"}},
		idpClient{ClientID: "mobile", ClientSecret: "mobile-secret", RedirectURIs: []string{"http://127.0.0.1:9/cb"}})
	// Another IdP, whose tokens name the same API.
	e.other = startIdPWith(t, env, idpClient{ClientID: "reporting", ClientSecret: "reporting-secret", RedirectURIs: []string{"http://127.0.0.1:9/cb"},
		GrantTypes: []string{"client_credentials", "authorization_code"}})
	r := startRedis(t)
	e.store = r.URL()
	e.up = startUpstream(t)
	policy := t.TempDir()
	if err := os.WriteFile(filepath.Join(policy, "orders.rego"), []byte(ordersPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	example := readExample(t, "api-and-browser.Caddyfile")
	secret := randomSecret(t)
	env2 := func(site string) []string {
		return []string{"GATEHOUSE_SITE=" + site, "GATEHOUSE_ISSUER=" + e.idp.Issuer, "GATEHOUSE_CLIENT_ID=orders",
			"GATEHOUSE_CLIENT_SECRET=orders-secret", "GATEHOUSE_COOKIE_SECRET=" + secret, "GATEHOUSE_GRANTS=" + e.store,
			"GATEHOUSE_POLICY=" + policy, "GATEHOUSE_UPSTREAM=" + e.up.Listener.Addr().String()}
	}
	e.ghA = startGatehouse(t, example, env2(e.nodeA), e.nodeA)
	e.ghB = startGatehouse(t, example, env2(e.nodeB), e.nodeB)
	return e
}

// clientToken gets a client-credentials access token from p.
func clientToken(t *testing.T, p *idp, client, secret, resource, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	if resource != "" {
		form.Set("resource", resource)
	}
	return tokenRequest(t, p, client, secret, form)["access_token"]
}

func tokenRequest(t *testing.T, p *idp, client, secret string, form url.Values) map[string]string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.Issuer+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("token request (%s): %d %s", form.Get("grant_type"), resp.StatusCode, b)
	}
	res := map[string]string{}
	for k, v := range out {
		if s, ok := v.(string); ok {
			res[k] = s
		}
	}
	return res
}

// userTokens signs user in at p through the mobile client (code flow with
// PKCE and the API as resource) and returns its access and ID tokens.
func userTokens(t *testing.T, p *idp, user string) (access, id string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	const redirect = "http://127.0.0.1:9/cb"
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(r.URL.String(), redirect) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	verifier := rand.Text() + rand.Text()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"client_id": {"mobile"}, "response_type": {"code"}, "scope": {"openid email profile groups orders:read"},
		"redirect_uri": {redirect}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		"resource": {apiResource}, "state": {"s"}}
	resp, err := c.Get(p.Issuer + "/auth?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`action="([^"]+)"`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no login form at the IdP: %s", body)
	}
	resp, err = c.PostForm(p.Issuer+string(m[1]), url.Values{"login": {user}, "password": {user + "-pw"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("no code after signing in: %d %v", resp.StatusCode, loc)
	}
	tok := tokenRequest(t, p, "mobile", "mobile-secret", url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {verifier}, "resource": {apiResource}})
	return tok["access_token"], tok["id_token"]
}

// call sends a request with an Authorization header to a node.
func call(t *testing.T, g *gatehouse, target, auth string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, target, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := transport(g).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestBearerTokens: machine clients with real tokens of a real IdP
// through the api-and-browser example, and every hostile token refused.
func TestBearerTokens(t *testing.T) {
	e := startBearer(t)
	service := clientToken(t, e.idp, "reporting", "reporting-secret", apiResource, "orders:read")
	if parts := strings.Split(service, "."); len(parts) != 3 {
		t.Fatalf("the IdP gave no JWT access token: %q", service)
	}

	// The reporting service reads orders; the app sees who, never the token.
	resp, body := call(t, e.ghA, e.nodeA+"/api/orders/7", "Bearer "+service)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Set-Cookie") != "" {
		t.Fatalf("the service's token: %d, Set-Cookie %q", resp.StatusCode, resp.Header.Get("Set-Cookie"))
	}
	got := echoedOf(t, body)
	if http.Header(got.Headers).Get("Authorization") != "" || http.Header(got.Headers).Get("X-Remote-User") != "reporting" {
		t.Errorf("the upstream got Authorization %q, X-Remote-User %q", http.Header(got.Headers).Get("Authorization"), http.Header(got.Headers).Get("X-Remote-User"))
	}
	line := e.ghA.waitAudit(t, auditLine("path", "/api/orders/7", "result", "allow", "principal", "service", "client_id", "reporting"))
	if line == nil {
		t.Error("no audit line names the service")
	}
	// Policy: the service may not use the rest of the app.
	if resp, _ := call(t, e.ghA, e.nodeA+"/admin", "Bearer "+service); resp.StatusCode != http.StatusForbidden {
		t.Errorf("the service elsewhere: %d", resp.StatusCode)
	}
	// A person's token (the mobile app for alice, staff) works on both nodes.
	aliceToken, idToken := userTokens(t, e.idp, "alice")
	for _, node := range []struct {
		g    *gatehouse
		base string
	}{{e.ghA, e.nodeA}, {e.ghB, e.nodeB}} {
		resp, body := call(t, node.g, node.base+"/reports", "Bearer "+aliceToken)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("alice's token: %d %s", resp.StatusCode, body)
		}
		if v := http.Header(echoedOf(t, body).Headers).Get("X-Remote-Email"); v != "alice@example.com" {
			t.Errorf("X-Remote-Email %q", v)
		}
	}

	// Hostile tokens: each a 401 (or 403) with RFC 6750's challenge, never
	// a redirect, never at the upstream.
	otherAud := clientToken(t, e.idp, "reporting", "reporting-secret", "https://other.example/api", "orders:read")
	otherIss := clientToken(t, e.other, "reporting", "reporting-secret", apiResource, "orders:read")
	noScope := clientToken(t, e.idp, "reporting", "reporting-secret", apiResource, "orders:write")
	short := clientToken(t, e.idp, "short-lived", "short-secret", apiResource, "orders:read")
	opaque := clientToken(t, e.idp, "reporting", "reporting-secret", "", "")
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	cases := []struct {
		name, auth string
		status     int
		reason     string
	}{
		{"a token for another API", "Bearer " + otherAud, 401, "token_audience"},
		{"a token of another issuer", "Bearer " + otherIss, 401, "token_issuer"},
		{"a token without the required scope", "Bearer " + noScope, 403, "insufficient_scope"},
		{"an opaque token", "Bearer " + opaque, 401, "token_malformed"},
		{"an ID token as an access token", "Bearer " + idToken, 401, "token_type"},
		{"alg none", "Bearer " + resigned(t, service, "none", nil), 401, "token_algorithm"},
		{"HS256", "Bearer " + resigned(t, service, "HS256", nil), 401, "token_algorithm"},
		{"signed by an unknown key", "Bearer " + resigned(t, service, "RS256", key), 401, "token_signature"},
		{"a tampered token", "Bearer " + tampered(service), 401, "token_signature"},
		{"two tokens", "Bearer " + service + ", Bearer " + service, 400, "bearer_malformed"},
	}
	if !eventually(5*time.Second, func() bool {
		resp, _ := call(t, e.ghA, e.nodeA+"/api/orders/1", "Bearer "+short)
		return resp.StatusCode == http.StatusUnauthorized
	}) {
		t.Error("a token past its exp is still accepted")
	} else {
		cases = append(cases, struct {
			name, auth string
			status     int
			reason     string
		}{"expired", "Bearer " + short, 401, "token_expired"})
	}
	before := e.up.hits.Load()
	for _, c := range cases {
		resp, body := call(t, e.ghA, e.nodeA+"/api/orders/1", c.auth)
		challenge := resp.Header.Get("WWW-Authenticate")
		if resp.StatusCode != c.status || !strings.HasPrefix(challenge, "Bearer error=") || resp.Header.Get("Location") != "" ||
			!strings.Contains(body, `"reason":"`+c.reason+`"`) {
			t.Errorf("%s: %d %q %s; want %d %s", c.name, resp.StatusCode, challenge, body, c.status, c.reason)
		}
		t.Logf("%-38s → %d %s", c.name, resp.StatusCode, challenge)
	}
	if n := e.up.hits.Load(); n != before {
		t.Errorf("%d refused requests reached the upstream", n-before)
	}

	// De-provisioning alice refuses her token on both nodes within 1 s.
	start := time.Now()
	out, err := exec.Command(gatehouseBin, "gatehouse", "users", "deprovision", "--store", e.store, "--sub", "alice", "--iss", e.idp.Issuer, "--by", "e2e").CombinedOutput()
	if err != nil {
		t.Fatalf("deprovision: %v\n%s", err, out)
	}
	for _, node := range []struct {
		g    *gatehouse
		base string
	}{{e.ghA, e.nodeA}, {e.ghB, e.nodeB}} {
		if !eventually(2*time.Second, func() bool {
			resp, _ := call(t, node.g, node.base+"/reports", "Bearer "+aliceToken)
			return resp.StatusCode == http.StatusUnauthorized
		}) {
			t.Errorf("%s: alice's token still works after de-provisioning", node.base)
		}
	}
	took := time.Since(start)
	t.Logf("de-provisioned alice's token refused on both nodes after %s", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("de-provisioning took %s to reach both nodes", took)
	}
	if line := e.ghB.waitAudit(t, auditLine("path", "/reports", "reason", "token_revoked")); line == nil {
		t.Error("no audit line says token_revoked")
	}

	// A sender-constrained token (DPoP, RFC 9449): bound to the client's
	// key by the IdP, usable only with a fresh proof of that key for the
	// very request, each proof once on any node.
	dkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"orders:read"}, "resource": {apiResource}}
	req, _ := http.NewRequest(http.MethodPost, e.idp.Issuer+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("DPoP", dpopProof(t, dkey, http.MethodPost, e.idp.Issuer+"/token", ""))
	req.SetBasicAuth("reporting", "reporting-secret")
	tresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var dtok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	_ = json.NewDecoder(tresp.Body).Decode(&dtok)
	tresp.Body.Close()
	if dtok.TokenType != "DPoP" || dtok.AccessToken == "" {
		t.Fatalf("the IdP gave no DPoP-bound token: %+v", dtok)
	}
	target := e.nodeA + "/api/orders/9"
	withProof := func(g *gatehouse, target, scheme, proof string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		req.Header.Set("Authorization", scheme+" "+dtok.AccessToken)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		resp, err := transport(g).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	proof := dpopProof(t, dkey, http.MethodGet, target, dtok.AccessToken)
	if resp, body := withProof(e.ghA, target, "DPoP", proof); resp.StatusCode != http.StatusOK {
		t.Fatalf("a DPoP-bound token with its proof: %d %s", resp.StatusCode, body)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		name, target, scheme, proof, reason string
		g                                   *gatehouse
	}{
		{"the proof again", target, "DPoP", proof, "dpop_replayed", e.ghA},
		{"the proof again, at the other node", strings.Replace(target, e.nodeA, e.nodeB, 1), "DPoP", proof, "dpop_mismatch", e.ghB},
		{"the bound token as a bearer token", target, "Bearer", "", "dpop_missing", e.ghA},
		{"no proof", target, "DPoP", "", "dpop_missing", e.ghA},
		{"a proof for another URL", target, "DPoP", dpopProof(t, dkey, http.MethodGet, e.nodeA+"/api/orders/10", dtok.AccessToken), "dpop_mismatch", e.ghA},
		{"a proof by another key", target, "DPoP", dpopProof(t, other, http.MethodGet, target, dtok.AccessToken), "dpop_key", e.ghA},
	} {
		resp, body := withProof(c.g, c.target, c.scheme, c.proof)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"reason":"`+c.reason+`"`) ||
			!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "DPoP error=") {
			t.Errorf("%s: %d %q %s", c.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		t.Logf("DPoP: %-36s → %d %s", c.name, resp.StatusCode, c.reason)
	}
	// A proof replayed at the other node, for that node's URL, is refused
	// there too: proofs are remembered in the shared store.
	targetB := e.nodeB + "/api/orders/9"
	proofB := dpopProof(t, dkey, http.MethodGet, targetB, dtok.AccessToken)
	if resp, body := withProof(e.ghB, targetB, "DPoP", proofB); resp.StatusCode != http.StatusOK {
		t.Fatalf("node B with a fresh proof: %d %s", resp.StatusCode, body)
	}
	if resp, body := withProof(e.ghB, targetB, "DPoP", proofB); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "dpop_replayed") {
		t.Errorf("node B, the same proof again: %d %s", resp.StatusCode, body)
	}
}

// dpopProof signs a DPoP proof with key for method and htu, carrying the
// hash of token when there is one.
func dpopProof(t *testing.T, key *ecdsa.PrivateKey, method, htu, token string) string {
	t.Helper()
	c := map[string]any{"jti": rand.Text(), "htm": method, "htu": htu, "iat": time.Now().Unix()}
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		c["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("dpop+jwt").WithHeader("jwk", jose.JSONWebKey{Key: &key.PublicKey}))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(c)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// echoedOf reads what the upstream received.
func echoedOf(t *testing.T, body string) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("not the upstream's answer: %s", body)
	}
	return e
}

// resigned re-signs token's payload with alg (none, HS256 keyed with the
// literal "secret", or RS256 with key), keeping its claims.
func resigned(t *testing.T, token, alg string, key *rsa.PrivateKey) string {
	t.Helper()
	parts := strings.Split(token, ".")
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + alg + `","typ":"at+jwt"}`))
	switch alg {
	case "none":
		return head + "." + parts[1] + "."
	case "RS256":
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("at+jwt"))
		if err != nil {
			t.Fatal(err)
		}
		jws, err := s.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := jws.CompactSerialize()
		return out
	default:
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("secret-secret-secret-secret-1234")}, (&jose.SignerOptions{}).WithType("at+jwt"))
		if err != nil {
			t.Fatal(err)
		}
		jws, err := s.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := jws.CompactSerialize()
		return out
	}
}

// tampered changes a token's subject, keeping its signature.
func tampered(token string) string {
	parts := strings.Split(token, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c map[string]any
	_ = json.Unmarshal(payload, &c)
	c["sub"] = "admin"
	b, _ := json.Marshal(c)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}
