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
	ex, err := rev.Explain(context.Background(), "", in.Value(), ExplainFails)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Err != nil || ex.Decision == nil || ex.Decision.Allow || ex.Decision.RequestGrant == nil || ex.Revision != rev.ID {
		t.Fatalf("explanation %+v", ex)
	}
	// The failed expressions name the rules' files and lines.
	if !strings.Contains(ex.Trace, "gatehouse/decision.rego:") || !strings.Contains(ex.Trace, "Fail") {
		t.Errorf("trace does not show what failed:\n%s", ex.Trace)
	}
	full, _ := rev.Explain(context.Background(), "", in.Value(), ExplainFull)
	if len(full.Trace) <= len(ex.Trace) {
		t.Error("the full trace is not longer than the failures")
	}
	if _, err := rev.Explain(context.Background(), "", in.Value(), "verbose"); err == nil {
		t.Error("an unknown mode was accepted")
	}
	in.AccessReq = &AccessRequest{Requester: Requester{Sub: "bob", Iss: in.User.Iss}, Resource: "payroll-admin", Duration: "1h"}
	in.User.Groups = []string{"managers"}
	ap, err := rev.Explain(context.Background(), DefaultApprovalQuery, in.Value(), ExplainOff)
	if err != nil || ap.Approval == nil || !ap.Approval.MayApprove {
		t.Errorf("approval explanation %+v %v", ap, err)
	}
}
