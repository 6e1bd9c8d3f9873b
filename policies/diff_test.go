package policies

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// loadDiffPolicy loads testdata/diff/<name>, whose package is
// diff_<name> (opa test and opa check load testdata too: two packages
// gatehouse would clash with the library).
func loadDiffPolicy(t *testing.T, name string) *Revision {
	t.Helper()
	rev, err := Load(context.Background(), "testdata/diff/"+name, Options{Query: "data.diff_" + name + ".decision", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func diffLog(t *testing.T, opts DiffOptions) *DiffReport {
	t.Helper()
	f, err := os.Open("testdata/diff/audit.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := Diff(context.Background(), f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

type groupSummary struct {
	change Change
	rule   string
	ids    []string
}

func summarize(rep *DiffReport) []groupSummary {
	var out []groupSummary
	for _, g := range rep.Groups {
		s := groupSummary{change: g.Change, rule: g.Rule}
		for _, e := range g.Examples {
			s.ids = append(s.ids, e.DecisionID)
		}
		out = append(out, s)
	}
	return out
}

// TestDiff replays testdata/diff/audit.jsonl (decisions of the current
// policy, a v1 input among them, a line without input, a sign-in, an
// event and a line that is not JSON) against the candidate: compared with
// what the log says was served, the changes are those of allow and deny,
// grouped by the candidate's rule that decided; compared with the current
// policy, the step-up it drops shows too.
func TestDiff(t *testing.T) {
	cand := loadDiffPolicy(t, "candidate")
	cur := loadDiffPolicy(t, "current")
	const (
		denyRule    = "data.diff_candidate.decision at decision.rego:27"
		reportsRule = "data.diff_candidate.decision at decision.rego:33 (via data.diff_candidate.contractor at decision.rego:9, data.diff_candidate.reports_path at decision.rego:13)"
		// admin_path held too, but was decided before (rule 16 asked for
		// it first) and OPA does not enter a rule twice.
		adminsRule = "data.diff_candidate.decision at decision.rego:22 (via data.diff_candidate.admins at decision.rego:7)"
	)

	logged := diffLog(t, DiffOptions{Candidate: cand, Examples: 2})
	wantLines := DiffLines{Read: 11, Replayed: 7, Changed: 4, NoInput: 1, NoPolicy: 1, Other: 1, Unreadable: 1}
	if logged.Lines != wantLines {
		t.Errorf("lines %+v, want %+v", logged.Lines, wantLines)
	}
	if len(logged.Unreadable) != 1 || logged.Unreadable[0].Line != 9 {
		t.Errorf("unreadable %+v, want line 9", logged.Unreadable)
	}
	if logged.Changes[ChangeAllowToDeny] != 3 || logged.Changes[ChangeDenyToAllow] != 1 || len(logged.Changes) != 2 {
		t.Errorf("changes %v", logged.Changes)
	}
	got := summarize(logged)
	if len(got) != 2 ||
		got[0].change != ChangeAllowToDeny || !strings.HasPrefix(got[0].rule, denyRule) || strings.Join(got[0].ids, " ") != "d000000000000002 d000000000000005" ||
		got[1].change != ChangeDenyToAllow || got[1].rule != reportsRule || strings.Join(got[1].ids, " ") != "d000000000000004" {
		t.Errorf("groups %+v", got)
	}
	if g := logged.Groups[0]; g.Count != 3 || g.App != "payroll" || g.Was != "" || g.Examples[1].User != "erin" || g.Examples[1].Method != "POST" ||
		g.Examples[1].Path != "/admin/export" || g.Examples[1].Served != "ALLOW" || !strings.Contains(g.Examples[1].Candidate, "admin needs the admins group") {
		t.Errorf("group %+v", g)
	}

	counts := diffLog(t, DiffOptions{Candidate: cand, CountsOnly: true})
	if counts.Lines != logged.Lines || len(counts.Groups) != 0 || counts.Changes[ChangeAllowToDeny] != 3 || counts.Changes[ChangeDenyToAllow] != 1 {
		t.Errorf("counts only: %+v", counts)
	}

	current := diffLog(t, DiffOptions{Candidate: cand, Current: cur})
	if current.Lines.Changed != 5 || current.Changes[ChangeStepUpRemoved] != 1 || current.Changes[ChangeAllowToDeny] != 3 || current.Current != cur.ID {
		t.Errorf("with the current policy: %+v %v", current.Lines, current.Changes)
	}
	var removed *DiffGroup
	for _, g := range current.Groups {
		if g.Change == ChangeStepUpRemoved {
			removed = g
		}
	}
	if removed == nil || removed.Rule != adminsRule || !strings.HasPrefix(removed.Was, "data.diff_current.decision at decision.rego:16") ||
		len(removed.Examples) != 1 || removed.Examples[0].User != "carol" || !strings.Contains(removed.Examples[0].Served, "needs step-up acr=[mfa]") {
		t.Errorf("step-up removed: %+v", removed)
	}
}

// TestDiffReport: the text report names the revisions, the lines, the
// counts and each group's rule and examples; --summary only the counts;
// JSON the same data.
func TestDiffReport(t *testing.T) {
	cand := loadDiffPolicy(t, "candidate")
	rep := diffLog(t, DiffOptions{Candidate: cand})
	var full, summary, js strings.Builder
	if err := WriteDiff(&full, rep, "candidate/", "", "text", false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"candidate  candidate/ (revision " + cand.ID + ")",
		"the log holds no step-up or headers: give --policy",
		"11 lines: 7 decisions replayed, 4 changed; 1 skipped without input (decision_log minimal); 1 not decided by a policy; 1 other lines; 1 unreadable",
		"unreadable line 9: not a JSON log line",
		"changes    allow_to_deny 3, deny_to_allow 1",
		"allow_to_deny  app payroll  3 decisions\n  decided by data.diff_candidate.decision at decision.rego:27",
		"  d000000000000002  bob <bob@example.com>  GET /admin/users\n      served:    ALLOW\n      candidate: DENY; reason \"admin needs the admins group\"",
		"deny_to_allow  app payroll  1 decision\n",
	} {
		if !strings.Contains(full.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, full.String())
		}
	}
	if err := WriteDiff(&summary, rep, "candidate/", "", "text", true); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(summary.String(), "  decided by") || !strings.Contains(summary.String(), "changes    allow_to_deny 3, deny_to_allow 1") {
		t.Errorf("summary:\n%s", summary.String())
	}
	if err := WriteDiff(&js, rep, "candidate/", "", "json", false); err != nil {
		t.Fatal(err)
	}
	var back DiffReport
	if err := json.Unmarshal([]byte(js.String()), &back); err != nil || back.Lines != rep.Lines || len(back.Groups) != 2 || back.Changes[ChangeAllowToDeny] != 3 {
		t.Errorf("JSON %s: %v", js.String(), err)
	}
}

// TestDiffStreamsLongLines: a line over the limit is counted unreadable
// and skipped to its end; the lines after it are read.
func TestDiffStreamsLongLines(t *testing.T) {
	cand := loadDiffPolicy(t, "candidate")
	b, err := os.ReadFile("testdata/diff/audit.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	long := `{"msg":"decision","pad":"` + strings.Repeat("x", 300_000) + `"}`
	log := long + "\n\n" + string(b) + long // the last without a newline
	rep, err := Diff(context.Background(), strings.NewReader(log), DiffOptions{Candidate: cand, MaxLine: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lines.Read != 13 || rep.Lines.Unreadable != 3 || rep.Lines.Changed != 4 || rep.Unreadable[0].Why != "longer than 100000 bytes" {
		t.Errorf("lines %+v, unreadable %+v", rep.Lines, rep.Unreadable)
	}
}
