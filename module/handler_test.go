package module

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

const testSecret = "test-secret-0123456789abcdef0123456789"

func validHandler() *Handler {
	return &Handler{
		App:           "payroll",
		Issuer:        "https://idp.invalid/realms/corp",
		ClientID:      "gatehouse",
		CookieSecrets: []string{testSecret},
		IdentityHeaders: []IdentityHeader{
			{Header: "X-Remote-User", Claim: "email"},
			{Header: "X-Remote-Groups", Claim: "groups"},
			{Header: "X-Department", Claim: "department"},
		},
		Public:     []string{"/static/*"},
		IdleIgnore: []string{"/poll"},
	}
}

func provision(t *testing.T, h *Handler) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	core, logs := observer.New(zapcore.InfoLevel)
	h.logger = zap.New(core)
	h.auditLog = h.logger.Named("audit")
	return h, logs
}

func TestProvisionRefusesBadConfig(t *testing.T) {
	cases := []struct {
		name   string
		change func(h *Handler)
		want   string
	}{
		{"no app", func(h *Handler) { h.App = "" }, "gatehouse: app: required"},
		{"bad app", func(h *Handler) { h.App = "pay roll" }, "gatehouse: app: \"pay roll\" must be"},
		{"no issuer", func(h *Handler) { h.Issuer = "" }, "gatehouse: issuer: required"},
		{"http issuer", func(h *Handler) { h.Issuer = "http://idp.example.com" }, "gatehouse: issuer: \"http://idp.example.com\" must use https"},
		{"issuer with query", func(h *Handler) { h.Issuer = "https://idp.example.com/?x=1" }, "gatehouse: issuer: \"https://idp.example.com/?x=1\" must be an absolute URL without userinfo, query or fragment"},
		{"no client", func(h *Handler) { h.ClientID = "" }, "gatehouse: client_id: required"},
		{"no secret", func(h *Handler) { h.CookieSecrets = nil }, "gatehouse: cookie_secret: required"},
		{"short secret", func(h *Handler) { h.CookieSecrets = []string{testSecret, "short"} }, "gatehouse: cookie_secret: secret #2 is 5 bytes after placeholders; it must be at least 32"},
		{"unset env secret", func(h *Handler) { h.CookieSecrets = []string{"{env.GATEHOUSE_TEST_UNSET_VAR}"} }, "gatehouse: cookie_secret: secret #1 is 0 bytes after placeholders"},
		{"scopes without openid", func(h *Handler) { h.Scopes = []string{"email"} }, "gatehouse: scopes: must include openid"},
		{"idle under a second", func(h *Handler) { h.IdleTimeout = caddy.Duration(time.Millisecond) }, "gatehouse: idle_timeout: must be at least 1s"},
		{"bad idle_activity", func(h *Handler) { h.IdleActivity = "some" }, "gatehouse: idle_activity: \"some\" must be navigation or any"},
		{"duplicate header", func(h *Handler) {
			h.IdentityHeaders = append(h.IdentityHeaders, IdentityHeader{Header: "x_remote_user", Claim: "sub"})
		}, "gatehouse: identity_header: x_remote_user is set twice"},
		{"forbidden header", func(h *Handler) { h.IdentityHeaders = []IdentityHeader{{Header: "Cookie", Claim: "sub"}} }, "gatehouse: identity_header: \"Cookie\" cannot be"},
		{"external url with path", func(h *Handler) { h.ExternalURL = "https://app.example.com/x" }, "gatehouse: external_url: \"https://app.example.com/x\" must be an origin"},
		{"bad domain", func(h *Handler) { h.AllowEmailDomains = []string{"exa mple.com"} }, "gatehouse: allow_email_domains: \"exa mple.com\" is not a domain name"},
		{"bad grants URL", func(h *Handler) { h.Grants = "mysql://db" }, "gatehouse: grants: \"mysql://db\": want file:///path"},
		{"redisx is not redis", func(h *Handler) { h.Grants = "redisx://db" }, "gatehouse: grants: \"redisx://db\": want file:///path"},
		{"a file URL without a path", func(h *Handler) { h.Grants = "file://" }, "gatehouse: grants: \"file://\": want file:///path"},
		{"a bad Redis URL", func(h *Handler) { h.Grants = "redis://host:port:x/0" }, "gatehouse: grants: \"redis://host:port:x/0\""},
		{"strip a prefix that covers X-Forwarded-For", func(h *Handler) { h.StripHeaders = []string{"X-Forwarded-*"} }, "gatehouse: strip_headers: \"X-Forwarded-*\" would cover x-forwarded-"},
		{"strip everything", func(h *Handler) { h.StripHeaders = []string{"*"} }, "gatehouse: strip_headers: \"*\" is too wide"},
		{"keep an identity header", func(h *Handler) { h.KeepHeaders = []string{"x_remote_user"} }, "gatehouse: keep_headers: x_remote_user is set by Gatehouse itself"},
		{"keep Host", func(h *Handler) { h.KeepHeaders = []string{"Host"} }, "gatehouse: keep_headers: \"Host\" cannot be"},
		{"grants timeout too long", func(h *Handler) { h.GrantsTimeout = caddy.Duration(time.Minute) }, "gatehouse: grants_timeout: must be between 1ms and 10s"},
		{"approval step-up asking nothing", func(h *Handler) { h.ApprovalStepUp = &StepUpRule{} }, "gatehouse: approval_step_up: asks for nothing"},
	}
	for _, c := range cases {
		h := validHandler()
		c.change(h)
		err := tryProvision(h)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v\nwant it to contain %q", c.name, err, c.want)
		}
	}
}

// tryProvisionKeep provisions h for a fuzz target (no cleanup: the
// target lives for the whole run).
func tryProvisionKeep(h *Handler) error {
	ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
	return h.Provision(ctx)
}

// tryProvision provisions h and cleans it up, returning the error.
func tryProvision(h *Handler) error {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := h.Provision(ctx)
	_ = h.Cleanup()
	return err
}

func TestProvisionResolvesPlaceholdersOffline(t *testing.T) {
	t.Setenv("GATEHOUSE_TEST_SECRET", "env-secret-0123456789abcdef0123456789")
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("file-secret-0123456789abcdef0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := validHandler()
	h.CookieSecrets = []string{"{env.GATEHOUSE_TEST_SECRET}", "{file." + file + "}"}
	h.ClientSecret = "{env.GATEHOUSE_TEST_SECRET}"
	h.Issuer = "https://idp.invalid" // never contacted during Provision
	provision(t, h)
	if h.CookieSecrets[0] != "env-secret-0123456789abcdef0123456789" || h.CookieSecrets[1] != "file-secret-0123456789abcdef0123456789" {
		t.Errorf("secrets not resolved: %q", h.CookieSecrets)
	}
	if h.ClientSecret != "env-secret-0123456789abcdef0123456789" {
		t.Errorf("client_secret not resolved")
	}
}

// serve runs one request through h with a next handler that records what
// it received.
func serve(h *Handler, r *http.Request) (*httptest.ResponseRecorder, *http.Request) {
	repl := caddy.NewReplacer()
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	r = r.Clone(ctx) // the handler edits headers; callers reuse their request
	var got *http.Request
	w := httptest.NewRecorder()
	err := h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		got = r
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	if err != nil {
		w.Code = -1
	}
	return w, got
}

func sessionCookie(t *testing.T, h *Handler, s *authn.Session) *http.Cookie {
	v, err := h.sessions.Seal(h.sessionCookie, s)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Cookie{Name: h.sessionCookie, Value: v}
}

func TestServeHTTPWithSession(t *testing.T) {
	now := time.Unix(1_764_000_000, 0)
	h := validHandler()
	h.now = func() time.Time { return now }
	h, logs := provision(t, h)
	sess := &authn.Session{ID: "s1", Subject: "alice", Email: "alice@example.com", Groups: []string{"staff", "a,b"},
		Created: now.Add(-time.Hour).Unix(), LastSeen: now.Add(-30 * time.Second).Unix(),
		Extra: map[string]string{"department": "Payroll\r\nX-Injected: 1"}}
	c := sessionCookie(t, h, sess)

	r := httptest.NewRequest(http.MethodGet, "https://app.example.com/reports", nil)
	r.AddCookie(c)
	r.Header.Set("Accept", "text/html")
	r.Header["X-Remote-User"] = []string{"mallory"}
	r.Header["X_Remote_Groups"] = []string{"admins"}
	r.Header.Set("Connection", "X-Remote-User")
	w, got := serve(h, r)
	if w.Code != http.StatusNoContent || got == nil {
		t.Fatalf("status %d, next called: %v", w.Code, got != nil)
	}
	for k, want := range map[string]string{"X-Remote-User": "alice@example.com", "X-Remote-Groups": "staff,a%2Cb", "X-Department": "PayrollX-Injected: 1"} {
		if v := got.Header[k]; len(v) != 1 || v[0] != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	for k := range got.Header {
		if strings.Contains(k, "_") {
			t.Errorf("the underscore spelling %s reached the next handler", k)
		}
	}
	if got.Header.Get("Connection") != "" {
		t.Errorf("Connection still names a managed header: %q", got.Header.Get("Connection"))
	}
	if w.Header().Get("Set-Cookie") != "" {
		t.Error("the cookie was re-issued 30s after the last slide")
	}
	repl := got.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if v, _ := repl.Get("http.auth.user.id"); v != "alice" {
		t.Errorf("http.auth.user.id = %v", v)
	}
	entries := logs.FilterMessage("decision").All()
	if len(entries) != 1 || entries[0].ContextMap()["result"] != "allow" || entries[0].LoggerName != "audit" {
		t.Fatalf("audit entries: %+v", entries)
	}

	// A minute later, a navigation slides the idle clock; a fetch does not.
	now = now.Add(31 * time.Second)
	r = httptest.NewRequest(http.MethodGet, "https://app.example.com/api", nil)
	r.AddCookie(c)
	r.Header.Set("Sec-Fetch-Mode", "cors")
	w, _ = serve(h, r)
	if w.Header().Get("Set-Cookie") != "" {
		t.Error("a background fetch slid the idle clock")
	}
	r = httptest.NewRequest(http.MethodGet, "https://app.example.com/poll", nil)
	r.AddCookie(c)
	r.Header.Set("Accept", "text/html")
	w, _ = serve(h, r)
	if w.Header().Get("Set-Cookie") != "" {
		t.Error("an idle_ignore path slid the idle clock")
	}
	r = httptest.NewRequest(http.MethodGet, "https://app.example.com/page", nil)
	r.AddCookie(c)
	r.Header.Set("Accept", "text/html")
	w, _ = serve(h, r)
	set := w.Result().Cookies()
	if len(set) != 1 || set[0].Name != "__Host-gatehouse" || !set[0].Secure || !set[0].HttpOnly || set[0].SameSite != http.SameSiteLaxMode {
		t.Fatalf("navigation after a minute: Set-Cookie %+v", set)
	}
	var slid authn.Session
	if err := h.sessions.Open(h.sessionCookie, set[0].Value, &slid); err != nil || slid.LastSeen != now.Unix() || slid.ID != "s1" {
		t.Errorf("re-issued session %+v, %v", slid, err)
	}

	// After the idle timeout, the old cookie no longer works.
	now = now.Add(15 * time.Minute)
	r = httptest.NewRequest(http.MethodGet, "https://app.example.com/api", nil)
	r.AddCookie(c)
	r.Header.Set("Accept", "application/json")
	w, got = serve(h, r)
	if w.Code != http.StatusUnauthorized || got != nil {
		t.Fatalf("idle session: status %d, next called %v", w.Code, got != nil)
	}
	var body map[string]string
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	if body["reason"] != "idle_timeout" || body["error"] != "unauthenticated" {
		t.Errorf("401 body %v", body)
	}
}

func TestServeHTTPWithoutSession(t *testing.T) {
	h, _ := provision(t, validHandler())

	// Public paths pass, stripped.
	r := httptest.NewRequest(http.MethodGet, "https://app.example.com/static/app.css", nil)
	r.Header.Set("X-Remote-User", "mallory")
	w, got := serve(h, r)
	if w.Code != http.StatusNoContent || got.Header.Get("X-Remote-User") != "" {
		t.Errorf("public path: %d, X-Remote-User %q", w.Code, got.Header.Get("X-Remote-User"))
	}
	// ...but not by a path trick.
	for _, p := range []string{"/static/../admin", "/STATIC/../admin", "/static/%2e%2e/admin"} {
		r = httptest.NewRequest(http.MethodGet, "https://app.example.com"+p, nil)
		r.Header.Set("Accept", "application/json")
		if w, got := serve(h, r); w.Code != http.StatusUnauthorized || got != nil {
			t.Errorf("%s: status %d", p, w.Code)
		}
	}
	// A navigation while the IdP is unreachable gets a clear 502 page.
	r = httptest.NewRequest(http.MethodGet, "https://app.example.com/x", nil)
	r.Header.Set("Accept", "text/html")
	w, got = serve(h, r)
	if w.Code != http.StatusBadGateway || got != nil || !strings.Contains(w.Body.String(), "identity provider cannot be reached") {
		t.Errorf("IdP down: %d %s", w.Code, w.Body)
	}
	for _, leak := range []string{"idp.invalid", "dial", "lookup", "discovery", "authn:", "error"} {
		if strings.Contains(strings.ToLower(w.Body.String()), leak) {
			t.Errorf("the error page leaks %q:\n%s", leak, w.Body)
		}
	}
	if !strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'none'") {
		t.Error("error page without CSP")
	}
	// Plain HTTP on a public host is refused before any login starts.
	r = httptest.NewRequest(http.MethodGet, "http://app.example.com/x", nil)
	r.TLS = nil
	r.Header.Set("Accept", "text/html")
	if w, _ := serve(h, r); w.Code != http.StatusBadRequest {
		t.Errorf("plain HTTP: %d", w.Code)
	}
}

// downStore is a store whose lookups fail, as a dead Redis's do.
type downStore struct{ grants.Store }

func (downStore) Lookup(context.Context, grants.User, string, time.Time) (grants.State, error) {
	return grants.State{}, grants.ErrUnavailable
}

// TestGrantStoreOutageIsLoggedOnce: while the store is down, requests go
// on (standing access) and the log says so once, not per request; it
// says so again when the store is back.
func TestGrantStoreOutageIsLoggedOnce(t *testing.T) {
	h, logs := provision(t, validHandler())
	mem := grants.NewMemory()
	down := grants.NewCache(downStore{mem}, 10*time.Millisecond)
	t.Cleanup(func() { _ = down.Close() })
	up := h.cache
	h.cache = down
	now := time.Now()
	sess := &authn.Session{ID: "s", Subject: "alice", Email: "alice@example.com", Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
	get := func() int {
		r := httptest.NewRequest(http.MethodGet, "https://app.example.com/x", nil)
		r.AddCookie(sessionCookie(t, h, sess))
		r.Header.Set("Accept", "application/json")
		w, _ := serve(h, r)
		return w.Code
	}
	count := func(msg string) int { return logs.FilterMessageSnippet(msg).Len() }
	for range 5 {
		if code := get(); code != http.StatusNoContent {
			t.Fatalf("standing access while the store is down: %d", code)
		}
	}
	if n := count("grant store unavailable"); n != 1 {
		t.Errorf("%d outage lines for 5 requests, want 1", n)
	}
	h.cache = up
	get()
	get()
	if n := count("grant store reachable again"); n != 1 {
		t.Errorf("%d recovery lines, want 1", n)
	}
}

// TestEndpointsRefuseRevokedSessions: Gatehouse's own endpoints check
// revocation as ServeHTTP does: a revoked session is not "already signed
// in" and cannot start a step-up.
func TestEndpointsRefuseRevokedSessions(t *testing.T) {
	h, _ := provision(t, validHandler())
	now := time.Now()
	sess := &authn.Session{ID: "s", Subject: "alice", Email: "alice@example.com", Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
	cookie := sessionCookie(t, h, sess)
	get := func(path string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "https://app.example.com"+path, nil)
		r.AddCookie(cookie)
		w, _ := serve(h, r)
		return w
	}
	if w := get("/.gatehouse/login?rd=/x"); w.Code != http.StatusFound || w.Header().Get("Location") != "/x" {
		t.Fatalf("a live session at the login endpoint: %d %q", w.Code, w.Header().Get("Location"))
	}
	h.cache.NoteSessionRevoked(h.user(sess), sess.ID, now.Add(time.Hour))
	for _, path := range []string{"/.gatehouse/login?rd=/x", "/.gatehouse/stepup?rd=/x"} {
		w := get(path)
		if w.Header().Get("Location") == "/x" {
			t.Errorf("%s: a revoked session was sent on to /x", path)
		}
		// It starts a login instead, which here (no IdP) ends in 502.
		if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "idp_unavailable") {
			t.Errorf("%s: a revoked session did not start a login: %d %s", path, w.Code, w.Body)
		}
	}
}

// TestApprovalStepUpURLStartsTheStepUp: the step_up_url that the
// approvals page's 401 names starts the approver's step-up; it does not
// send the client back to the page that answered 401 (a loop).
func TestApprovalStepUpURLStartsTheStepUp(t *testing.T) {
	h := validHandler()
	h.ApprovalStepUp = &StepUpRule{ACR: []string{"urn:mfa"}, MaxAge: caddy.Duration(10 * time.Minute)}
	h, _ = provision(t, h)
	now := time.Now()
	sess := &authn.Session{ID: "s", Subject: "carol", Email: "carol@example.com", ACR: "urn:pwd", Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
	cookie := sessionCookie(t, h, sess)
	get := func(path string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "https://app.example.com"+path, nil)
		r.AddCookie(cookie)
		r.Header.Set("Accept", "application/json")
		w, _ := serve(h, r)
		return w
	}
	w := get("/.gatehouse/approvals")
	var body struct {
		Error     string
		StepUpURL string `json:"step_up_url"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusUnauthorized || body.Error != "step_up_required" || body.StepUpURL == "" {
		t.Fatalf("approvals without the step-up: %d %s", w.Code, w.Body)
	}
	// It starts a step-up at the IdP, which here (no IdP) ends in 502.
	w = get(body.StepUpURL)
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "idp_unavailable") {
		t.Errorf("%s: %d %q %s; want the step-up to start", body.StepUpURL, w.Code, w.Header().Get("Location"), w.Body)
	}
}
