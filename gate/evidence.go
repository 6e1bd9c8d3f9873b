package gate

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/grants"
)

// EvidenceColumns are the evidence export's columns (docs/evidence.md):
// when, where, what happened, to whom, on what, and who did it why. Any
// other field of an event follows in "details" as key=value pairs.
var EvidenceColumns = []string{"time", "app", "event", "user", "iss", "email", "resource", "grant_id", "request_id",
	"reason", "approved_by", "until", "actor", "why", "details"}

// WriteEvidence writes history entries as CSV (one row per entry, the
// EvidenceColumns) or JSON (one object per entry, time in RFC 3339).
func WriteEvidence(w io.Writer, entries []grants.HistoryEntry, format string) error {
	switch format {
	case "json":
		out := make([]map[string]any, 0, len(entries))
		for _, e := range entries {
			m := map[string]any{"time": time.Unix(e.At, 0).UTC().Format(time.RFC3339), "app": e.App, "event": e.Event, "id": e.ID}
			for k, v := range e.Fields {
				m[k] = v
			}
			out = append(out, m)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case "csv", "":
		cw := csv.NewWriter(w)
		if err := cw.Write(EvidenceColumns); err != nil {
			return err
		}
		for _, e := range entries {
			row := []string{time.Unix(e.At, 0).UTC().Format(time.RFC3339), e.App, e.Event}
			used := map[string]bool{}
			for _, c := range EvidenceColumns[3 : len(EvidenceColumns)-1] {
				row = append(row, csvSafe(e.Fields[c]))
				used[c] = true
			}
			var rest []string
			for k, v := range e.Fields {
				if !used[k] {
					rest = append(rest, k+"="+v)
				}
			}
			sort.Strings(rest)
			row = append(row, csvSafe(strings.Join(rest, " ")))
			if err := cw.Write(row); err != nil {
				return err
			}
		}
		cw.Flush()
		return cw.Error()
	}
	return fmt.Errorf("format %q: csv or json", format)
}

// csvSafe keeps a value from being read as a formula by a spreadsheet
// (CSV injection): a leading =, +, - or @ is quoted with an apostrophe.
func csvSafe(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

// HistoryEntryOf turns an audit event into a history entry: its message
// and its fields as text (times in RFC 3339).
func HistoryEntryOf(app string, e Event, at time.Time) grants.HistoryEntry {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range e.Fields {
		f.AddTo(enc)
	}
	fields := make(map[string]string, len(enc.Fields))
	for k, v := range enc.Fields {
		switch v := v.(type) {
		case time.Time:
			fields[k] = v.UTC().Format(time.RFC3339)
		case nil:
		default:
			fields[k] = fmt.Sprint(v)
		}
	}
	if e.Failed {
		fields["failed"] = "true"
	}
	return grants.HistoryEntry{At: at.Unix(), App: app, Event: e.Msg, Fields: fields}
}

// Evidential reports whether an event is kept as evidence: what changed
// someone's access (grants, requests, approvals, de-provisionings,
// logouts everywhere, revocations), not sign-in mechanics.
func Evidential(e Event) bool {
	return !strings.HasPrefix(e.Msg, "step-up") && !strings.HasPrefix(e.Msg, "form ") && !strings.HasPrefix(e.Msg, "keep-form")
}
