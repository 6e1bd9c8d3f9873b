package policies

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Diff replays a decision log against a candidate policy (`gatehouse
// policy diff`): every decision line written with decision_log full is
// decided again by the candidate and compared with what was served (as
// the line says, or as the current policy decides it again), and the
// changes are grouped by the candidate's rule that decided, by app and
// by kind of change, with a few example requests each. The log is read
// one line at a time: memory holds the groups and their examples, never
// the log.

// DiffOptions say what Diff compares.
type DiffOptions struct {
	// Candidate is the policy to try.
	Candidate *Revision
	// Current, when set, decides each input again as the serving policy;
	// without it, each line's own result, reason, policy_reason and
	// grant_offer say what was served (the log holds no step-up or
	// headers: those changes are then not seen).
	Current *Revision
	// Examples is how many example requests each group keeps; default 3.
	Examples int
	// MaxLine bounds one log line; longer ones are counted as unreadable.
	// Default 4 MiB.
	MaxLine int
	// CountsOnly leaves out the groups: only the lines and changes are
	// counted (no rule is explained: much faster).
	CountsOnly bool
}

// DiffReport is what Diff found.
type DiffReport struct {
	Candidate string `json:"candidate_revision"`
	Current   string `json:"current_revision,omitempty"` // "" when compared with the log
	// Lines counts the log's lines by what they were: replayed
	// (decision lines with an input), changed (of those), no_input
	// (decided by a policy, logged with decision_log minimal: skipped),
	// no_policy (decision lines no policy decided: sign-ins, endpoints,
	// public paths), other (event lines, other loggers) and unreadable
	// (not JSON, or an input the schema refuses).
	Lines      DiffLines        `json:"lines"`
	Changes    map[Change]int   `json:"changes"`
	Groups     []*DiffGroup     `json:"groups"`
	Unreadable []UnreadableLine `json:"unreadable,omitempty"` // the first few
}

// DiffLines counts a log's lines by kind.
type DiffLines struct {
	Read       int `json:"read"`
	Replayed   int `json:"replayed"`
	Changed    int `json:"changed"`
	NoInput    int `json:"no_input"`
	NoPolicy   int `json:"no_policy"`
	Other      int `json:"other"`
	Unreadable int `json:"unreadable"`
}

// UnreadableLine says why a line could not be replayed.
type UnreadableLine struct {
	Line int    `json:"line"`
	Why  string `json:"why"`
}

// DiffGroup is the decisions one change made in one app, decided by one
// rule of the candidate (and, with a current policy, one of it).
type DiffGroup struct {
	Change Change `json:"change"`
	App    string `json:"app"`
	// Rule is the candidate's rule that decided, in the policy's own
	// terms: "data.gatehouse.decision at gatehouse/decision.rego:161",
	// with the rules it consulted that held ("via …"); Was is the
	// current policy's, with a current policy.
	Rule     string        `json:"rule"`
	Was      string        `json:"was,omitempty"`
	Count    int           `json:"count"`
	Examples []DiffExample `json:"examples"`
}

// DiffExample is one request of a group, as its decision line names it.
type DiffExample struct {
	DecisionID string `json:"decision_id"`
	User       string `json:"user"`
	Email      string `json:"email,omitempty"`
	Method     string `json:"method"`
	Path       string `json:"path"`
	Served     string `json:"served"`
	Candidate  string `json:"candidate"`
}

const maxUnreadable = 5

// decisionLine is what Diff reads of an audit line besides its input.
type decisionLine struct {
	Msg            string          `json:"msg"`
	DecisionID     string          `json:"decision_id"`
	App            string          `json:"app"`
	User           string          `json:"user"`
	Email          string          `json:"email"`
	Method         string          `json:"method"`
	Path           string          `json:"path"`
	Result         string          `json:"result"`
	Reason         string          `json:"reason"`
	PolicyReason   string          `json:"policy_reason"`
	GrantOffer     string          `json:"grant_offer"`
	PolicyRevision string          `json:"policy_revision"`
	Input          json.RawMessage `json:"input"`
}

// errLogged stands for a serving policy that could not decide, as the
// log says (policy_error).
var errLogged = errors.New("the serving policy could not decide (policy_error)")

// Diff reads the decision log from r and compares each replayable
// decision as opts says.
func Diff(ctx context.Context, r io.Reader, opts DiffOptions) (*DiffReport, error) {
	if opts.Examples <= 0 {
		opts.Examples = 3
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = 4 << 20
	}
	rep := &DiffReport{Candidate: opts.Candidate.ID, Changes: map[Change]int{}}
	if opts.Current != nil {
		rep.Current = opts.Current.ID
	}
	groups := map[[4]string]*DiffGroup{}
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := readLine(br, opts.MaxLine)
		if err == io.EOF && line == nil {
			break
		}
		if err != nil && err != io.EOF && !errors.Is(err, errLineTooLong) {
			return rep, err
		}
		if len(bytes.TrimSpace(line)) == 0 && err == nil {
			continue
		}
		rep.Lines.Read++
		if errors.Is(err, errLineTooLong) {
			rep.unreadable(n, fmt.Sprintf("longer than %d bytes", opts.MaxLine))
			continue
		}
		if why := diffLine(ctx, rep, groups, line, opts); why != "" {
			rep.unreadable(n, why)
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	for _, g := range groups {
		rep.Groups = append(rep.Groups, g)
	}
	slices.SortFunc(rep.Groups, func(a, b *DiffGroup) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Change, b.Change), cmp.Compare(a.App, b.App),
			cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Was, b.Was))
	})
	return rep, nil
}

func (rep *DiffReport) unreadable(n int, why string) {
	rep.Lines.Unreadable++
	if len(rep.Unreadable) < maxUnreadable {
		rep.Unreadable = append(rep.Unreadable, UnreadableLine{Line: n, Why: why})
	}
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line without its newline, at most max bytes; a
// longer line is skipped to its end and reported as errLineTooLong.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max+1 {
			line = nil
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err == io.EOF {
				err = nil
			}
			if err != nil {
				return nil, err
			}
			return []byte{}, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(line) > 0:
			return line, nil
		case err != nil:
			return nil, err
		}
		return bytes.TrimSuffix(line, []byte("\n")), nil
	}
}

// diffLine replays one line, or says why it cannot.
func diffLine(ctx context.Context, rep *DiffReport, groups map[[4]string]*DiffGroup, line []byte, opts DiffOptions) string {
	var dl decisionLine
	if err := json.Unmarshal(line, &dl); err != nil {
		return "not a JSON log line (the audit log must use Caddy's json format)"
	}
	switch {
	case dl.Msg != "decision" || dl.DecisionID == "":
		rep.Lines.Other++
		return ""
	case dl.PolicyRevision == "":
		rep.Lines.NoPolicy++
		return ""
	case len(dl.Input) == 0 || string(dl.Input) == "null":
		rep.Lines.NoInput++
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(dl.Input))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return "input: not a JSON object"
	}
	// As ReadInput does for an audit line: a user without grants was
	// once logged as null.
	if g, ok := doc["grants"]; ok && g == nil {
		doc["grants"] = []any{}
	}
	rp, err := replayDoc(doc, false)
	if err != nil {
		return "decision " + dl.DecisionID + ": " + err.Error()
	}
	rep.Lines.Replayed++
	cand, candErr := opts.Candidate.Decide(ctx, rp.Input)
	var served Decision
	var servedErr error
	if opts.Current != nil {
		served, servedErr = opts.Current.Decide(ctx, rp.Input)
	} else {
		served, servedErr = loggedDecision(&dl, cand)
	}
	changes := Compare(served, servedErr, cand, candErr)
	if opts.Current == nil {
		// The log holds no step-up or headers of an allow.
		changes = slices.DeleteFunc(changes, func(c Change) bool {
			return c == ChangeStepUpAdded || c == ChangeStepUpRemoved || c == ChangeStepUpChanged || c == ChangeHeadersChanged
		})
	}
	if len(changes) == 0 {
		return ""
	}
	rep.Lines.Changed++
	if opts.CountsOnly {
		for _, c := range changes {
			rep.Changes[c]++
		}
		return ""
	}
	rule := decidingRule(ctx, opts.Candidate, rp, candErr)
	was := ""
	if opts.Current != nil {
		was = decidingRule(ctx, opts.Current, rp, servedErr)
	}
	ex := DiffExample{DecisionID: dl.DecisionID, User: dl.User, Email: dl.Email, Method: dl.Method, Path: dl.Path,
		Served: describe(served, servedErr), Candidate: describe(cand, candErr)}
	for _, c := range changes {
		rep.Changes[c]++
		key := [4]string{string(c), dl.App, rule, was}
		g := groups[key]
		if g == nil {
			g = &DiffGroup{Change: c, App: dl.App, Rule: rule, Was: was}
			groups[key] = g
		}
		g.Count++
		if len(g.Examples) < opts.Examples {
			g.Examples = append(g.Examples, ex)
		}
	}
	return ""
}

// loggedDecision is the decision a line says was served: a deny (with
// its reason and offer) for policy_deny, and for grants_unavailable with
// an offer; an error for policy_error; else an allow (a step-up or a
// later failure came after the policy allowed). The log keeps an offer's
// resource, not its duration: the candidate's is taken when it offers
// the same resource.
func loggedDecision(dl *decisionLine, cand Decision) (Decision, error) {
	switch {
	case dl.Reason == "policy_error":
		return Decision{}, errLogged
	case dl.Reason == "policy_deny" || dl.Reason == "grants_unavailable" && dl.GrantOffer != "":
		d := Decision{Reason: dl.PolicyReason}
		if dl.GrantOffer != "" {
			d.RequestGrant = &GrantOffer{Resource: dl.GrantOffer}
			if c := cand.RequestGrant; c != nil && c.Resource == dl.GrantOffer {
				d.RequestGrant.MaxDuration = c.MaxDuration
			}
		}
		return d, nil
	default:
		return Decision{Allow: true}, nil
	}
}

// decidingRule names the rule of rev that decided the input, in the
// policy's own terms: the query's rule that held, with the rules it
// consulted that held. An evaluation that failed is named as such, not
// by its message (which may quote the input): examples show it.
func decidingRule(ctx context.Context, rev *Revision, rp *Replay, decideErr error) string {
	if decideErr != nil {
		return "(could not decide)"
	}
	ex, err := rev.Explain(ctx, "", rp.Input, TraceOff)
	if err != nil || ex.Err != nil {
		return "(could not decide)"
	}
	var names []string
	for _, t := range ex.Rules {
		if !t.Held {
			continue
		}
		name := t.Rule + " at " + t.Location
		var via []string
		for _, c := range t.Rules {
			if c.Held {
				via = append(via, c.Rule+" at "+c.Location)
			}
		}
		if len(via) > 0 {
			name += " (via " + strings.Join(via, ", ") + ")"
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return "the default (no rule of " + ex.Query + " held)"
	}
	return strings.Join(names, "; ")
}

// describe is a decision as a report line shows it.
func describe(d Decision, err error) string {
	if err != nil {
		return "ERROR (policy_error): " + err.Error()
	}
	return d.String()
}

// WriteDiff writes a report for people ("text": the revisions compared,
// the lines read, the changes counted and, unless summary, each group
// with its examples) or as JSON.
func WriteDiff(w io.Writer, rep *DiffReport, candidateDir, currentDir, format string, summary bool) error {
	if format == "json" {
		out := *rep
		if summary {
			out.Groups = nil
		}
		if out.Groups == nil {
			out.Groups = []*DiffGroup{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "candidate  %s (revision %s)\n", candidateDir, rep.Candidate)
	if rep.Current != "" {
		fmt.Fprintf(&b, "against    %s (revision %s), deciding each input again\n", currentDir, rep.Current)
	} else {
		b.WriteString("against    what the log says was served (result, reason, policy_reason, grant_offer);\n" +
			"           the log holds no step-up or headers: give --policy to compare those too\n")
	}
	l := rep.Lines
	fmt.Fprintf(&b, "log        %d lines: %d decisions replayed, %d changed; %d skipped without input (decision_log minimal); "+
		"%d not decided by a policy; %d other lines; %d unreadable\n",
		l.Read, l.Replayed, l.Changed, l.NoInput, l.NoPolicy, l.Other, l.Unreadable)
	for _, u := range rep.Unreadable {
		fmt.Fprintf(&b, "unreadable line %d: %s\n", u.Line, u.Why)
	}
	if len(rep.Changes) == 0 {
		b.WriteString("changes    none\n")
	} else {
		var parts []string
		for _, c := range Changes {
			if n := rep.Changes[c]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", c, n))
			}
		}
		fmt.Fprintf(&b, "changes    %s\n", strings.Join(parts, ", "))
	}
	if !summary {
		for _, g := range rep.Groups {
			fmt.Fprintf(&b, "\n%s  app %s  %d decision", g.Change, g.App, g.Count)
			if g.Count != 1 {
				b.WriteString("s")
			}
			fmt.Fprintf(&b, "\n  decided by %s\n", g.Rule)
			if g.Was != "" {
				fmt.Fprintf(&b, "  was        %s\n", g.Was)
			}
			for _, e := range g.Examples {
				who := e.User
				if e.Email != "" {
					who += " <" + e.Email + ">"
				}
				fmt.Fprintf(&b, "  %s  %s  %s %s\n      served:    %s\n      candidate: %s\n", e.DecisionID, who, e.Method, e.Path, e.Served, e.Candidate)
			}
		}
	}
	if !summary && len(rep.Groups) > 0 {
		fmt.Fprintf(&b, "\nwhy one of them changed, rule by rule: gatehouse policy eval --policy %s --input <its audit line>\n", candidateDir)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
