package gate

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// The gate's tests run without Caddy or any network: an in-process
// OpenID Provider, the in-memory grant store, a glob path matcher and a
// clock the test moves. The Caddy glue and the real parts (Caddy's path
// matcher, the certified IdP, Redis, a browser) are tested in module/
// and e2e/.

const testSecret = "test-secret-0123456789abcdef0123456789"

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// testIdP is an in-process OpenID Provider: discovery, keys, a token
// endpoint that returns the ID token a test issued for a code, and an
// end-session endpoint.
type testIdP struct {
	*httptest.Server
	key    *rsa.PrivateKey // signs its ID tokens
	mu     sync.Mutex
	tokens map[string]map[string]any // code → ID token claims
	// noEndSession leaves end_session_endpoint out of the discovery
	// document, and issResponse says the IdP always names itself in
	// its answers (RFC 9207); set them before the gate's first use of
	// the IdP.
	noEndSession, issResponse bool
}

func newTestIdP(t testing.TB) *testIdP { return newTestIdPKey(t, testKey()) }

// newTestIdPKey is a test IdP that signs with key.
func newTestIdPKey(t testing.TB, key *rsa.PrivateKey) *testIdP {
	t.Helper()
	p := &testIdP{key: key, tokens: map[string]map[string]any{}}
	mux := http.NewServeMux()
	p.Server = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		doc := map[string]any{
			"issuer": p.URL, "authorization_endpoint": p.URL + "/auth", "token_endpoint": p.URL + "/token",
			"jwks_uri": p.URL + "/jwks", "end_session_endpoint": p.URL + "/logout",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		}
		if p.noEndSession {
			delete(doc, "end_session_endpoint")
		}
		if p.issResponse {
			doc["authorization_response_iss_parameter_supported"] = true
		}
		_ = json.NewEncoder(w).Encode(doc)
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		p.mu.Lock()
		claims, ok := p.tokens[r.PostForm.Get("code")]
		delete(p.tokens, r.PostForm.Get("code"))
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant"})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "id_token": p.sign(t, claims)})
	})
	return p
}

func (p *testIdP) sign(t testing.TB, claims map[string]any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: p.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Error(err)
		return ""
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Error(err)
		return ""
	}
	out, _ := jws.CompactSerialize()
	return out
}

// signIn plays the IdP's part of a sign-in the gate started with a
// redirect to authURL: the user (claims, merged over a fresh
// authentication of sub) signs in, and the browser comes back to the
// callback with a code for that ID token. It returns the callback URL.
func (p *testIdP) signIn(t *testing.T, authURL string, now time.Time, claims map[string]any) string {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil || !strings.HasPrefix(authURL, p.URL+"/auth?") {
		t.Fatalf("not a sign-in at this IdP: %q", authURL)
	}
	q := u.Query()
	tok := map[string]any{"iss": p.URL, "aud": q.Get("client_id"), "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(),
		"auth_time": now.Unix(), "nonce": q.Get("nonce"), "sub": "alice", "email": "alice@example.com", "email_verified": true}
	for k, v := range claims {
		tok[k] = v
	}
	code := "code-" + rand.Text()
	p.mu.Lock()
	p.tokens[code] = tok
	p.mu.Unlock()
	return q.Get("redirect_uri") + "?code=" + code + "&state=" + url.QueryEscape(q.Get("state")) + "&iss=" + url.QueryEscape(p.URL)
}

// globPaths matches exact paths and trailing-* prefixes, in lowercase: a
// stand-in for Caddy's path matcher, which the module provides.
type globPaths []string

func (g globPaths) MatchPath(r *http.Request) bool {
	p := strings.ToLower(r.URL.Path)
	for _, pat := range g {
		pat = strings.ToLower(pat)
		if prefix, ok := strings.CutSuffix(pat, "*"); ok && strings.HasPrefix(p, prefix) || p == pat {
			return true
		}
	}
	return false
}

// testClock is a clock the test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testGate is a gate with its IdP, store, clock and logs.
type testGate struct {
	*Gate
	idp   *testIdP
	clock *testClock
	store grants.Store
	logs  *observer.ObservedLogs
}

// newTestGate builds the payroll site's gate (identity headers, a public
// path, an idle_ignore path) against a fresh IdP and memory store; change
// adjusts the configuration first.
func newTestGate(t testing.TB, change func(*Config)) *testGate {
	t.Helper()
	idp := newTestIdP(t)
	clock := &testClock{t: time.Now().Truncate(time.Second)}
	store := grants.NewMemory()
	cache := grants.NewCache(store, 50*time.Millisecond)
	t.Cleanup(func() { _ = cache.Close() })
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := Config{
		App: "payroll", Issuer: idp.URL, ClientID: "gatehouse", Scopes: []string{"openid", "email", "profile"}, GroupsClaim: "groups",
		IdP:           IdP{Discovery: authn.NewDiscovery(idp.URL, idp.Client()), Used: authn.NewUsedStates()},
		CookieSecrets: [][]byte{[]byte(testSecret)}, CookieName: "gatehouse",
		Lifetimes: authn.Lifetimes{Idle: 15 * time.Minute, Lifetime: 12 * time.Hour},
		IdentityHeaders: []IdentityHeader{{Header: "X-Remote-User", Claim: "email"}, {Header: "X-Remote-Groups", Claim: "groups"},
			{Header: "X-Department", Claim: "department"}},
		Public: globPaths{"/static/*"}, IdleIgnore: globPaths{"/poll"},
		Grants: cache, InputHeaders: []string{"User-Agent"}, RedactQuery: []string{"token", "code", "state"},
		Logger: zap.New(core), Now: clock.now,
	}
	if change != nil {
		change(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testGate{Gate: g, idp: idp, clock: clock, store: store, logs: logs}
}

// session is alice's session, made a minute ago and seen 5 s ago.
func (tg *testGate) session() *authn.Session {
	now := tg.clock.now()
	return &authn.Session{ID: "s1", Subject: "alice", Issuer: tg.idp.URL, Email: "alice@example.com", Groups: []string{"staff"},
		Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
}

// cookie seals s into a session cookie.
func (tg *testGate) cookie(t *testing.T, s *authn.Session) *http.Cookie {
	t.Helper()
	c, err := tg.cookies.sessionCookie(s, tg.clock.now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// request is a request to the payroll site: JSON by default, a
// navigation the user made (a click) with nav.
func request(method, target string, nav bool, cookies ...*http.Cookie) *http.Request {
	r := httptest.NewRequest(method, "https://app.example.com"+target, nil)
	if nav {
		r.Header.Set("Sec-Fetch-Mode", "navigate")
		r.Header.Set("Sec-Fetch-Dest", "document")
		r.Header.Set("Sec-Fetch-User", "?1")
	} else {
		r.Header.Set("Accept", "application/json")
	}
	for _, c := range cookies {
		r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	return r
}

// handle strips and decides a request, as the module does.
func (tg *testGate) handle(r *http.Request) Outcome {
	tg.Strip(r)
	return tg.Handle(&Request{HTTP: r, ClientIP: "203.0.113.9", Start: tg.clock.now()})
}

// upstream is the value of an upstream header of an Allow outcome.
func (o Outcome) upstream(name string) (string, bool) {
	for _, h := range o.Upstream {
		if h.Name == name {
			return strings.Join(h.Values, ","), len(h.Values) == 1
		}
	}
	return "", false
}

// cookie returns the cookie the outcome sets under name.
func (o Outcome) cookie(name string) *http.Cookie {
	for _, c := range o.Cookies {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// want checks an outcome's kind, status, result and reason.
func want(t *testing.T, what string, o Outcome, kind Kind, status int, result Result, reason Reason) {
	t.Helper()
	if o.Kind != kind || o.Status != status || o.Result != result || o.Reason != reason {
		t.Errorf("%s: %s %d %s/%q (err %v), want %s %d %s/%q", what, o.Kind, o.Status, o.Result, o.Reason, o.Err, kind, status, result, reason)
	}
}
