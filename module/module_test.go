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
	core, logs := observer.New(zapcore.InfoLevel)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.provision(ctx, zap.New(core)); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
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
		{"unset env secret", func(h *Handler) { h.CookieSecrets = []string{"{env.GATEHOUSE_TEST_UNSET_VAR}"} },
			"gatehouse: a placeholder resolved to nothing: cookie_secret {env.GATEHOUSE_TEST_UNSET_VAR} (set GATEHOUSE_TEST_UNSET_VAR)"},
		// An unset client secret would make a public client whose every
		// login the IdP refuses; an unset policy would allow everyone.
		{"unset client secret", func(h *Handler) { h.ClientSecret = "{env.GATEHOUSE_TEST_UNSET_VAR}" },
			"gatehouse: a placeholder resolved to nothing: client_secret {env.GATEHOUSE_TEST_UNSET_VAR} (set GATEHOUSE_TEST_UNSET_VAR)"},
		{"unset policy and grants", func(h *Handler) { h.Policy, h.Grants = "{env.GATEHOUSE_TEST_UNSET_P}", "{file./nonexistent/gatehouse}" },
			"gatehouse: a placeholder resolved to nothing: grants {file./nonexistent/gatehouse}; policy {env.GATEHOUSE_TEST_UNSET_P} (set GATEHOUSE_TEST_UNSET_P)"},
		{"unset provider secret", func(h *Handler) {
			h.Providers = map[string]*Provider{"eid": {Issuer: "https://eid.invalid", ClientID: "x", ClientSecret: "{env.GATEHOUSE_TEST_UNSET_VAR}", LinkClaim: "email"}}
		}, "gatehouse: a placeholder resolved to nothing: provider eid client_secret {env.GATEHOUSE_TEST_UNSET_VAR} (set GATEHOUSE_TEST_UNSET_VAR)"},
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
		{"strip a prefix that covers X-Forwarded-For", func(h *Handler) { h.StripHeaders = []string{"X-Forwarded-*"} }, "gatehouse: strip_headers: \"X-Forwarded-*\" would cover X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto, which"},
		{"strip everything", func(h *Handler) { h.StripHeaders = []string{"*"} }, "gatehouse: strip_headers: \"*\" is too wide"},
		{"keep an identity header", func(h *Handler) { h.KeepHeaders = []string{"x_remote_user"} }, "gatehouse: keep_headers: x_remote_user is set by Gatehouse itself"},
		{"keep Host", func(h *Handler) { h.KeepHeaders = []string{"Host"} }, "gatehouse: keep_headers: \"Host\" cannot be"},
		{"grants timeout too long", func(h *Handler) { h.GrantsTimeout = caddy.Duration(time.Minute) }, "gatehouse: grants_timeout: must be between 1ms and 10s"},
		{"approval step-up asking nothing", func(h *Handler) { h.ApprovalStepUp = &StepUpRule{} }, "gatehouse: approval_step_up: asks for nothing"},
		{"preserve_post over 1MiB", func(h *Handler) { h.PreservePost = 1<<20 + 1 }, "gatehouse: preserve_post: must be a size up to 1048576 bytes (1MiB), or -1 (off), got 1048577"},
		{"preserve_post below -1", func(h *Handler) { h.PreservePost = -2 }, "gatehouse: preserve_post: must be a size up to"},
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

// sessionCookie seals s as the handler would, from its configuration
// alone: the secret, and the app, issuer and client the cookie is bound to.
func sessionCookie(t testing.TB, h *Handler, s *authn.Session) *http.Cookie {
	t.Helper()
	sealer, err := authn.NewSealer([][]byte{[]byte(h.CookieSecrets[0])}, "session",
		authn.Binding{App: h.App, Issuer: h.Issuer, ClientID: h.ClientID}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v, err := sealer.Seal("__Host-gatehouse", s)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Cookie{Name: "__Host-gatehouse", Value: v}
}

// grantStore is the grant store the handler shares (as the admin API
// finds it).
func grantStore(t testing.TB, h *Handler) grants.Store {
	t.Helper()
	var s grants.Store
	for _, p := range h.pooled {
		grantStores.Range(func(k, val any) bool {
			if p.pool == grantStores && k == p.key {
				s = val.(*grants.Cache).Store()
			}
			return s == nil
		})
	}
	if s == nil {
		t.Fatal("the handler holds no grant store")
	}
	return s
}

// TestServeHTTP: the glue around the gate. An allowed request reaches the
// next handler with the identity headers set (and the client's removed),
// the user in Caddy's placeholder and without Gatehouse's cookies, after
// one audit line; anything else is answered as the Outcome says, as a
// page for a browser and JSON for the rest, after its audit line.
func TestServeHTTP(t *testing.T) {
	now := time.Unix(1_764_000_000, 0)
	h := validHandler()
	h.now = func() time.Time { return now }
	h, logs := provision(t, h)
	sess := &authn.Session{ID: "s1", Subject: "alice", Email: "alice@example.com", Groups: []string{"staff", "a,b"},
		Created: now.Add(-time.Hour).Unix(), LastSeen: now.Add(-2 * time.Minute).Unix()}
	c := sessionCookie(t, h, sess)

	r := httptest.NewRequest(http.MethodGet, "https://app.example.com/reports", nil)
	r.AddCookie(c)
	r.AddCookie(&http.Cookie{Name: "app", Value: "1"})
	r.Header.Set("Accept", "text/html")
	r.Header["X-Remote-User"] = []string{"mallory"}
	r.Header["X_Remote_Groups"] = []string{"admins"}
	w, got := serve(h, r)
	if w.Code != http.StatusNoContent || got == nil {
		t.Fatalf("status %d, next called: %v", w.Code, got != nil)
	}
	for k, want := range map[string]string{"X-Remote-User": "alice@example.com", "X-Remote-Groups": "staff,a%2Cb"} {
		if v := got.Header[k]; len(v) != 1 || v[0] != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	for k := range got.Header {
		if strings.Contains(k, "_") {
			t.Errorf("the client's %s reached the next handler", k)
		}
	}
	if got.Header.Get("Cookie") != "app=1" {
		t.Errorf("upstream request headers %v", got.Header)
	}
	if set := w.Result().Cookies(); len(set) != 1 || set[0].Name != "__Host-gatehouse" {
		t.Errorf("the navigation after two minutes did not slide the idle clock: %+v", set)
	}
	repl := got.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if v, _ := repl.Get("http.auth.user.id"); v != "alice" {
		t.Errorf("http.auth.user.id = %v", v)
	}
	entries := logs.FilterMessage("decision").All()
	if len(entries) != 1 || entries[0].LoggerName != "audit" {
		t.Fatalf("audit entries: %+v", entries)
	}
	line := entries[0].ContextMap()
	for k, want := range map[string]any{"result": "allow", "reason": "", "user": "alice", "email": "alice@example.com", "app": "payroll",
		"method": "GET", "path": "/reports"} {
		if line[k] != want {
			t.Errorf("audit %s = %v, want %v", k, line[k], want)
		}
	}

	// Refused: JSON for an API, with the decision id of its audit line.
	r = httptest.NewRequest(http.MethodGet, "https://app.example.com/api", nil)
	r.Header.Set("Accept", "application/json")
	w, got = serve(h, r)
	var body map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusUnauthorized || got != nil ||
		body["error"] != "unauthenticated" || body["reason"] != "no_session" || body["login_url"] != "/.gatehouse/login?rd=%2Fapi" ||
		w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("401: %d %v %s", w.Code, w.Header(), w.Body)
	}
	entries = logs.FilterMessage("decision").All()
	if last := entries[len(entries)-1].ContextMap(); last["decision_id"] != body["decision_id"] || last["result"] != "unauthenticated" {
		t.Errorf("the answer's decision id %q is not its audit line's %v", body["decision_id"], last)
	}
	// A page for a browser, with its CSP; never a stack of internals.
	r = httptest.NewRequest(http.MethodGet, "https://app.example.com/.gatehouse/nothing", nil)
	r.Header.Set("Accept", "text/html")
	w, _ = serve(h, r)
	if w.Code != http.StatusNotFound || !strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'none'") ||
		w.Header().Get("X-Frame-Options") != "DENY" || !strings.Contains(w.Body.String(), "There is nothing here.") {
		t.Errorf("404 page: %d %v %s", w.Code, w.Header(), w.Body)
	}
	// A redirect, with the Outcome's headers: a method not allowed names
	// the allowed ones.
	r = httptest.NewRequest(http.MethodPut, "https://app.example.com/.gatehouse/login", nil)
	w, _ = serve(h, r)
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET" {
		t.Errorf("PUT /login: %d %v", w.Code, w.Header())
	}
	r = httptest.NewRequest(http.MethodGet, "https://app.example.com/.gatehouse/login?rd=/x", nil)
	r.AddCookie(c)
	if w, _ = serve(h, r); w.Code != http.StatusFound || w.Header().Get("Location") != "/x" {
		t.Errorf("/login with a session: %d %v", w.Code, w.Header())
	}
	// A document: the health check.
	r = httptest.NewRequest(http.MethodGet, "https://app.example.com/.gatehouse/healthz", nil)
	if w, _ = serve(h, r); w.Code != http.StatusOK || w.Body.String() != `{"status":"ok"}`+"\n" || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("healthz: %d %v %q", w.Code, w.Header(), w.Body)
	}
}

// TestRawTargetIsCheckedBeforeRewrites: the request-target the gate
// checks is the one the client sent, before a rewrite in front of
// Gatehouse (Caddy keeps it in the original request).
func TestRawTargetIsCheckedBeforeRewrites(t *testing.T) {
	h, _ := provision(t, validHandler())
	now := time.Now()
	sess := &authn.Session{ID: "s", Subject: "alice", Email: "alice@example.com", Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
	cookie := sessionCookie(t, h, sess)
	for _, c := range []struct {
		raw, rewritten string
		want           int
	}{
		{"/public;/../admin", "/admin", http.StatusBadRequest},
		{"/x/..%5cadmin", "/admin", http.StatusBadRequest},
		{"/app/reports?q=;%2f", "/reports", http.StatusNoContent},
	} {
		r := httptest.NewRequest(http.MethodGet, "https://app.example.com/", nil)
		r.RequestURI = c.raw
		orig := *r
		u, _ := r.URL.Parse(c.rewritten)
		r.URL, r.RequestURI = u, u.RequestURI()
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.OriginalRequestCtxKey, orig))
		r.AddCookie(cookie)
		r.Header.Set("Accept", "application/json")
		w, got := serve(h, r)
		if w.Code != c.want || (c.want >= 400) != (got == nil) {
			t.Errorf("%s (served as %q): status %d, next called %v; want %d", c.raw, c.rewritten, w.Code, got != nil, c.want)
		}
	}
}
