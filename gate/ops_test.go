package gate

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gatehouse-proxy/gatehouse/grants"
)

// failingStore fails the operations named in fail, as an unreachable or
// refusing store would.
type failingStore struct {
	grants.Store
	fail map[string]bool
}

var errStoreRefused = errors.New("CROSSSLOT Keys in request don't hash to the same slot")

func (f *failingStore) RevokeUser(ctx context.Context, u grants.User, at time.Time) error {
	if f.fail["RevokeUser"] {
		return errStoreRefused
	}
	return f.Store.RevokeUser(ctx, u, at)
}

func (f *failingStore) RevokeGrant(ctx context.Context, id, by string, now time.Time) (grants.Grant, error) {
	if f.fail["RevokeGrant"] {
		return grants.Grant{}, errStoreRefused
	}
	return f.Store.RevokeGrant(ctx, id, by, now)
}

func (f *failingStore) AddGrant(ctx context.Context, g grants.Grant) (grants.Grant, error) {
	if f.fail["AddGrant"] {
		return g, errStoreRefused
	}
	return f.Store.AddGrant(ctx, g)
}

func (f *failingStore) Decide(ctx context.Context, id string, d grants.Decision) (grants.Request, *grants.Grant, error) {
	if f.fail["Decide"] {
		return grants.Request{}, nil, errStoreRefused
	}
	return f.Store.Decide(ctx, id, d)
}

// TestStoreOpAuditTellsTheTruth: an operation's audit lines name what
// happened, and a failed operation writes a failure line with the error,
// never the event of what did not happen.
func TestStoreOpAuditTellsTheTruth(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	bob := grants.User{Iss: "https://idp.example", Sub: "bob"}
	cases := []struct {
		name    string
		op      StoreOp
		fail    string
		want    []string // audit messages, in order
		wantErr bool
	}{
		{"logout, store refuses", StoreOp{Op: "logout-user", Sub: "bob", Iss: bob.Iss}, "RevokeUser", []string{"logout-user failed"}, true},
		{"logout", StoreOp{Op: "logout-user", Sub: "bob", Iss: bob.Iss}, "", []string{"user logged out everywhere"}, false},
		{"deprovision, sessions fail", StoreOp{Op: "deprovision", Sub: "bob", Iss: bob.Iss}, "RevokeUser", []string{"deprovision failed"}, true},
		{"deprovision, grants fail", StoreOp{Op: "deprovision", Sub: "bob", Iss: bob.Iss}, "RevokeGrant",
			[]string{"user logged out everywhere", "deprovision failed"}, true},
		{"deprovision, requests fail", StoreOp{Op: "deprovision", Sub: "bob", Iss: bob.Iss}, "Decide",
			[]string{"user logged out everywhere", "grant revoked", "deprovision failed"}, true},
		{"deprovision", StoreOp{Op: "deprovision", Sub: "bob", Iss: bob.Iss}, "",
			[]string{"user logged out everywhere", "grant revoked", "grant rejected", "user de-provisioned"}, false},
		{"revoke, store refuses", StoreOp{Op: "revoke-grant"}, "RevokeGrant", []string{"revoke-grant failed"}, true},
		{"add, store refuses", StoreOp{Op: "add-grant", Sub: "bob", Iss: bob.Iss, Resource: "db", Reason: "x", Duration: "1h"}, "AddGrant",
			[]string{"add-grant failed"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem := grants.NewMemory()
			t.Cleanup(func() { _ = mem.Close() })
			g, _ := mem.AddGrant(ctx, grants.Grant{User: bob, Resource: "db", CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
			_, _ = mem.CreateRequest(ctx, grants.Request{App: "a", Resource: "x", User: bob, Duration: 60, MaxDuration: 60, CreatedAt: now.Unix()})
			op := c.op
			if op.Op == "revoke-grant" {
				op.ID = g.ID
			}
			s := &failingStore{Store: mem, fail: map[string]bool{c.fail: true}}
			res, err := op.Run(ctx, s, now)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v", err)
			}
			core, logs := observer.New(zapcore.InfoLevel)
			l := zap.New(core)
			for _, e := range res.Events {
				l.Check(e.Level(), e.Msg).Write(e.Fields...)
			}
			var got []string
			for _, e := range logs.All() {
				got = append(got, e.Message)
				if e.Level == zapcore.ErrorLevel && e.ContextMap()["error"] != errStoreRefused.Error() {
					t.Errorf("failure line without the error: %v", e.ContextMap())
				}
				if e.ContextMap()["actor"] != "cli" {
					t.Errorf("%s: actor %v, want cli", e.Message, e.ContextMap()["actor"])
				}
			}
			if len(got) != len(c.want) {
				t.Fatalf("audit %q, want %q", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("audit %q, want %q", got, c.want)
				}
			}
		})
	}
}

// TestUsersByEmail: a user who signed in (with a verified email) can be
// named by that email at once, in any case, without a grant or a request;
// an email never seen, or seen unverified, is refused saying to give
// --iss and --sub, which always work.
func TestUsersByEmail(t *testing.T) {
	tg := newTestGate(t, nil)
	out, _ := tg.signIn(t, "/", map[string]any{"sub": "bob", "email": "Bob@Example.com"})
	want(t, "bob's sign-in", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	out, _ = tg.signIn(t, "/", map[string]any{"sub": "eve", "email": "eve@example.com", "email_verified": false})
	want(t, "eve's sign-in", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	ctx, now := context.Background(), tg.clock.now()

	res, err := (&StoreOp{Op: "deprovision", Email: "bob@EXAMPLE.com"}).Run(ctx, tg.store, now)
	if err != nil || len(res.Users) != 1 || res.Users[0] != (grants.User{Iss: tg.idp.URL, Sub: "bob"}) {
		t.Fatalf("deprovision by the email bob signed in with: %+v %v", res, err)
	}
	for _, email := range []string{"eve@example.com", "nobody@example.com"} {
		_, err := (&StoreOp{Op: "logout-user", Email: email}).Run(ctx, tg.store, now)
		if !errors.Is(err, ErrUnknownEmail) || !strings.Contains(err.Error(), "name the user with --iss and --sub") {
			t.Errorf("%s: %v", email, err)
		}
	}
	if _, err := (&StoreOp{Op: "logout-user", Sub: "eve", Iss: tg.idp.URL}).Run(ctx, tg.store, now); err != nil {
		t.Errorf("by --iss and --sub: %v", err)
	}
	if _, err := (&StoreOp{Op: "logout-user", Sub: "eve"}).Run(ctx, tg.store, now); err == nil || !strings.Contains(err.Error(), "give both --sub and --iss") {
		t.Errorf("--sub alone: %v", err)
	}
}

// TestPrintNamesTheIssuer: a user is iss + sub, so the table shows both
// (two IdPs may have the same subject), with the email where known.
func TestPrintNamesTheIssuer(t *testing.T) {
	now := time.Unix(1795597200, 0)
	res := &StoreOpResult{
		Grants: []grants.Grant{
			{ID: "g1", User: grants.User{Iss: "https://idp-a.example", Sub: "bob"}, Email: "bob@example.com", Resource: "db", ExpiresAt: now.Unix() + 60},
			{ID: "g2", User: grants.User{Iss: "https://idp-b.example", Sub: "bob"}, Resource: "db", ExpiresAt: now.Unix() - 60},
		},
		Requests: []grants.Request{{ID: "r1", App: "a", User: grants.User{Iss: "https://idp-b.example", Sub: "bob"}, Resource: "db", Duration: 3600, Status: grants.Pending}},
	}
	var b strings.Builder
	if err := res.Print(&b, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	for i, want := range map[int][]string{
		0: {"SUB", "ISSUER", "EMAIL"},
		1: {"g1", "bob", "https://idp-a.example", "bob@example.com", "active"},
		2: {"g2", "bob", "https://idp-b.example", " - ", "expired"},
		3: {"ISSUER"},
		4: {"r1", "https://idp-b.example", "1h0m0s", "pending"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d lacks %q:\n%s", i, w, b.String())
			}
		}
	}
}
