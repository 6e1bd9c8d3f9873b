package policies

import (
	"context"
	"strings"
	"testing"
)

func TestExplain(t *testing.T) {
	rev, err := Load(context.Background(), ".", Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := realisticInput()
	in.SetGrants(nil) // no grant for /admin: denied, with an offer
	ex, err := rev.Explain(context.Background(), "", in.Value(), TraceOff)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Err != nil || ex.Decision == nil || ex.Decision.Allow || ex.Decision.RequestGrant == nil || ex.Revision != rev.ID {
		t.Fatalf("explanation %+v", ex)
	}
	if ex.Trace != "" {
		t.Error("a raw trace without asking for one")
	}
	// The rules, in the policy's terms: names, files and lines of the
	// policy, the expressions as written.
	var b strings.Builder
	writeRules(&b, ex.Rules, 0)
	why := b.String()
	for _, want := range []string{
		"data.gatehouse.decision at gatehouse/decision.rego:182: held",
		"data.gatehouse.allow at gatehouse/decision.rego:123: did not hold: count(granted) > 0 (gatehouse/decision.rego:126)",
		"data.gatehouse.deny_reason at gatehouse/decision.rego:",
	} {
		if !strings.Contains(why, want) {
			t.Errorf("the explanation lacks %q:\n%s", want, why)
		}
	}
	for _, internal := range []string{"internal.", "__local", "member_2"} {
		if strings.Contains(why, internal) {
			t.Errorf("the explanation shows compiler internals (%s):\n%s", internal, why)
		}
	}
	// The raw trace is there on request, with OPA's view of it.
	fails, err := rev.Explain(context.Background(), "", in.Value(), TraceFails)
	if err != nil || !strings.Contains(fails.Trace, "gatehouse/decision.rego:") || !strings.Contains(fails.Trace, "Fail") {
		t.Errorf("trace does not show what failed (%v):\n%s", err, fails.Trace)
	}
	full, _ := rev.Explain(context.Background(), "", in.Value(), TraceFull)
	if len(full.Trace) <= len(fails.Trace) {
		t.Error("the full trace is not longer than the failures")
	}
	if _, err := rev.Explain(context.Background(), "", in.Value(), "verbose"); err == nil {
		t.Error("an unknown trace mode was accepted")
	}
	in.AccessReq = &AccessRequest{Requester: Requester{Sub: "bob", Iss: in.User.Iss}, Resource: "payroll-admin", Duration: "1h"}
	in.User.Groups = []string{"managers"}
	ap, err := rev.Explain(context.Background(), DefaultApprovalQuery, in.Value(), TraceOff)
	if err != nil || ap.Approval == nil || !ap.Approval.MayApprove {
		t.Errorf("approval explanation %+v %v", ap, err)
	}
	if len(ap.Rules) == 0 || ap.Rules[0].Rule != "data.gatehouse.approval" {
		t.Errorf("approval rules %+v", ap.Rules)
	}
}

// TestExplainRuleTree: a rule that held, one that did not with the
// expression it stopped at, a function called for several elements
// shown once, and a negation that holds not counted as a failure.
func TestExplainRuleTree(t *testing.T) {
	dir := writePolicy(t, map[string]string{"p.rego": `package gatehouse

default decision := false

decision if {
	not banned
	some g in input.user.groups
	is_admin(g)
}

banned if input.user.sub == "mallory"

is_admin(g) if g == "admins"
`})
	rev, err := Load(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rp, err := ReadInput(strings.NewReader(`{"user":{"sub":"bob","groups":["staff","admins"]}}`), true)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := rev.Explain(context.Background(), "", rp.Input, TraceOff)
	if err != nil || ex.Decision == nil || !ex.Decision.Allow {
		t.Fatalf("%+v %v", ex, err)
	}
	var b strings.Builder
	writeRules(&b, ex.Rules, 0)
	want := `  data.gatehouse.decision at p.rego:5: held
    data.gatehouse.banned at p.rego:11: did not hold: input.user.sub == "mallory" (p.rego:11)
    data.gatehouse.is_admin at p.rego:13: held
`
	if b.String() != want {
		t.Errorf("rules:\n%s\nwant:\n%s", b.String(), want)
	}
	rp, _ = ReadInput(strings.NewReader(`{"user":{"sub":"bob","groups":["staff"]}}`), true)
	ex, _ = rev.Explain(context.Background(), "", rp.Input, TraceOff)
	b.Reset()
	writeRules(&b, ex.Rules, 0)
	if !strings.Contains(b.String(), `data.gatehouse.decision at p.rego:5: did not hold: is_admin(g) (p.rego:8)`) ||
		!strings.Contains(b.String(), `data.gatehouse.is_admin at p.rego:13: did not hold: g == "admins" (p.rego:13)`) {
		t.Errorf("rules:\n%s", b.String())
	}
}
