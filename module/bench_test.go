package module

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// benchHandler is the contractor-jit example's handler: the policy
// library (app projects), an embedded grant store, two identity headers,
// and an audit line per request encoded as JSON (to io.Discard).
func benchHandler(b *testing.B, policy bool) *Handler {
	b.Helper()
	return benchHandlerWith(b, policy, nil)
}

// benchHandlerWith is benchHandler with change applied before Provision.
func benchHandlerWith(b *testing.B, policy bool, change func(*Handler)) *Handler {
	b.Helper()
	h := &Handler{
		App: "projects", Issuer: "https://idp.invalid/realms/corp", ClientID: "gatehouse",
		CookieSecrets: []string{testSecret},
		IdentityHeaders: []IdentityHeader{
			{Header: "X-Remote-User", Claim: "email"},
			{Header: "X-Remote-Groups", Claim: "groups"},
		},
		Grants:        "file://" + filepath.Join(b.TempDir(), "grants.db"),
		Policy:        "../policies",
		PolicyHeaders: []string{"X-Projects-Role"},
	}
	if !policy {
		h.Policy, h.PolicyHeaders = "", nil
	}
	if change != nil {
		change(h)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	if err := h.provision(ctx, zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zapcore.InfoLevel))); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Cleanup() })
	return h
}

type benchUser struct {
	cookie string
}

// benchUsers makes n staff sessions (and every tenth a contractor with a
// grant for projects-app), spread over realistic group sets.
func benchUsers(b *testing.B, h *Handler, n int) []benchUser {
	b.Helper()
	now := time.Now()
	groupSets := [][]string{{"staff"}, {"staff", "engineering"}, {"staff", "projects-admins"}, {"staff", "vpn", "berlin"}}
	users := make([]benchUser, n)
	for i := range users {
		s := &authn.Session{ID: fmt.Sprintf("sid-%d", i), Subject: fmt.Sprintf("user-%d", i), Email: fmt.Sprintf("user%d@example.com", i),
			Name: "User", Groups: groupSets[i%len(groupSets)], Created: now.Unix() - 60, LastSeen: now.Unix() - 5}
		if i%10 == 9 {
			s.Groups = []string{"contractors"}
			if _, err := grantStore(b, h).AddGrant(context.Background(), grants.Grant{User: grants.User{Iss: h.Issuer, Sub: s.Subject},
				Resource: "projects-app", Reason: "bench", ExpiresAt: now.Add(time.Hour).Unix(), CreatedAt: now.Unix(), ApprovedBy: "carol@example.com"}); err != nil {
				b.Fatal(err)
			}
		}
		c := sessionCookie(b, h, s)
		users[i] = benchUser{cookie: c.Name + "=" + c.Value}
	}
	return users
}

// benchRequests pre-builds one request per user, each on one of paths.
func benchRequests(users []benchUser, paths int) []*http.Request {
	reqs := make([]*http.Request, len(users))
	for i, u := range users {
		r := httptest.NewRequest(http.MethodGet, fmt.Sprintf("https://projects.example.com/work/%d?tab=notes", (i*7919)%paths), nil)
		r.Header.Set("Cookie", u.cookie)
		r.Header.Set("Accept", "application/json")
		r.Header.Set("User-Agent", "bench")
		r.Header.Set("X-Remote-User", "forged@example.com")
		ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
		ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
		reqs[i] = r.WithContext(ctx)
	}
	return reqs
}

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

func runServeBench(b *testing.B, h *Handler, reqs []*http.Request) {
	w := &nopWriter{h: http.Header{}}
	// Every request must be allowed: a benchmark of denials is no benchmark.
	for _, r := range reqs {
		rec := httptest.NewRecorder()
		ok := false
		if err := h.ServeHTTP(rec, r.Clone(r.Context()), caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { ok = true; return nil })); err != nil || !ok {
			b.Fatalf("%s not allowed: %d %s", r.URL, rec.Code, rec.Body)
		}
	}
	// The handler strips its cookies from the request it passes on, so
	// each iteration puts the client's Cookie header back (without an
	// allocation: one reusable slice per request).
	sent := make([]string, len(reqs))
	cookies := make([][]string, len(reqs))
	for i, r := range reqs {
		sent[i] = r.Header.Get("Cookie")
		cookies[i] = make([]string, 1)
	}
	forged := []string{"forged@example.com"} // the handler replaces, never edits, it
	allowed := 0
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { allowed++; return nil })
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		k := i % len(reqs)
		r := reqs[k]
		i++
		cookies[k][0] = sent[k]
		r.Header["Cookie"] = cookies[k]
		r.Header["X-Remote-User"] = forged
		if err := h.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
		clear(w.h)
	}
	if forged[0] != "forged@example.com" {
		b.Fatal("the handler edited the client's header value in place")
	}
	if allowed != i {
		b.Fatalf("%d of %d requests were allowed", allowed, i)
	}
}

// BenchmarkServeHTTP is the hot path: a valid session up to the next
// handler, with the policy library and a grant lookup.
func BenchmarkServeHTTP(b *testing.B) {
	b.Run("one-user", func(b *testing.B) {
		h := benchHandler(b, true)
		runServeBench(b, h, benchRequests(benchUsers(b, h, 1), 1))
	})
	b.Run("1000-users-100-paths", func(b *testing.B) {
		h := benchHandler(b, true)
		runServeBench(b, h, benchRequests(benchUsers(b, h, 1000), 100))
	})
}

func BenchmarkServeHTTPNoPolicy(b *testing.B) {
	h := benchHandler(b, false)
	runServeBench(b, h, benchRequests(benchUsers(b, h, 1000), 100))
}

// BenchmarkAuditLine is one decision's audit line, JSON-encoded (to
// io.Discard: the write itself is the log output's cost).
func BenchmarkAuditLine(b *testing.B) {
	h := benchHandler(b, true)
	start := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		out := gate.Outcome{Kind: gate.Allow, Result: gate.ResultAllow, Audit: gate.Audit{Start: start, Method: "GET", Path: "/work/17",
			User: "user-000042", Email: "user42@example.com", Revision: "98f5fbf9c113", Cached: true}}
		h.audit(&out)
	}
}
