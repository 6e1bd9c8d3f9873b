package policies

import (
	"context"
	"fmt"
	"testing"
)

// realisticInput is a staff member with 20 grants (one for the path)
// opening a sensitive admin page of the payroll app.
func realisticInput() *Input {
	in := &Input{
		App: "payroll", Now: 1795597200,
		User: User{Sub: "3f1c9a7e-0d2b-4c55-9a1e-6b0f2d7c8e91", Iss: "https://idp.example.com/realms/corp",
			Email: "alice@example.com", Name: "Alice Example", Groups: []string{"staff", "payroll-users", "vpn", "all-hands", "berlin"},
			ACR: "urn:gatehouse:loa:mfa", AMR: []string{"pwd", "otp"}, AuthTime: 1795597000},
		Session:   Session{AgeS: 3600, IdleS: 20},
		Principal: Principal{Kind: "user", Via: "session"}, Token: Token{Scopes: []string{}}, RevokedResources: []string{},
		Request: Request{Method: "GET", Host: "payroll.example.com", Path: "/admin/users", PathLower: "/admin/users",
			RawPath: "/admin/users", Query: map[string][]string{"page": {"2"}}, RemoteIP: "203.0.113.9",
			Headers: map[string]string{"user-agent": "Mozilla/5.0"}},
	}
	for i := range 19 {
		in.Grants = append(in.Grants, Grant{Resource: fmt.Sprintf("other-%d", i), ExpiresAt: 1795600000, ApprovedBy: "carol@example.com"})
	}
	in.Grants = append(in.Grants, Grant{Resource: "payroll-admin", ExpiresAt: 1795600000, ApprovedBy: "carol@example.com"})
	in.SetGrants(in.Grants)
	in.NowMinute = MinuteOf(in.Now)
	return in
}

func BenchmarkDecide(b *testing.B) {
	rev, err := Load(context.Background(), ".", Options{})
	if err != nil {
		b.Fatal(err)
	}
	in := realisticInput()
	ctx := context.Background()
	d, err := rev.Decide(ctx, in.Value())
	if err != nil || !d.Allow || d.StepUp == nil {
		b.Fatalf("unexpected decision %+v %v", d, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rev.Decide(ctx, in.Value()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInputValue(b *testing.B) {
	in := realisticInput()
	b.ReportAllocs()
	for b.Loop() {
		_ = in.Value()
	}
}
func BenchmarkDecideTrivial(b *testing.B) {
	rev, err := Load(context.Background(), writePolicy(b, map[string]string{"p.rego": "package gatehouse\n\ndecision := {\"allow\": true}\n"}), Options{})
	if err != nil {
		b.Fatal(err)
	}
	in := realisticInput().Value()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rev.Decide(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecidePrebuiltInput(b *testing.B) {
	rev, err := Load(context.Background(), ".", Options{})
	if err != nil {
		b.Fatal(err)
	}
	in := realisticInput().Value()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rev.Decide(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecideCached is a decision the revision's cache answers: the
// key is built from the fields the library reads and looked up.
func BenchmarkDecideCached(b *testing.B) {
	rev, err := Load(context.Background(), ".", Options{})
	if err != nil {
		b.Fatal(err)
	}
	in := realisticInput()
	ctx := context.Background()
	if _, _, err := rev.DecideInput(ctx, in); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, cached, err := rev.DecideInput(ctx, in); err != nil || !cached {
			b.Fatal(cached, err)
		}
	}
}
