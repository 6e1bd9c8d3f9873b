package gate

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/grants"
)

// TestEvidence: an audit event becomes a history entry with text fields
// (times in RFC 3339); the export writes the documented columns, keeps
// other fields in details, and defuses spreadsheet formulas.
func TestEvidence(t *testing.T) {
	until := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	g := grants.Grant{ID: "g1", User: grants.User{Iss: "https://idp", Sub: "bob"}, Email: "bob@example.com", Resource: "db",
		Reason: "=HYPERLINK(\"http://evil\")", ApprovedBy: "carol@example.com", ExpiresAt: until.Unix()}
	e := GrantEvent(EventGrantApproved, &g, "carol", "")
	e.Fields = append(e.Fields, zap.String("decision_id", "d1"))
	h := HistoryEntryOf("projects", e, until.Add(-time.Hour))
	if h.Event != EventGrantApproved || h.Fields["grant_id"] != "g1" || h.Fields["until"] != "2026-12-07T12:00:00Z" || h.App != "projects" {
		t.Fatalf("entry %+v", h)
	}
	var buf bytes.Buffer
	if err := WriteEvidence(&buf, []grants.HistoryEntry{h}, "csv"); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil || len(rows) != 2 || strings.Join(rows[0], ",") != strings.Join(EvidenceColumns, ",") {
		t.Fatalf("csv %v %v", rows, err)
	}
	row := map[string]string{}
	for i, c := range rows[0] {
		row[c] = rows[1][i]
	}
	if row["time"] != "2026-12-07T11:00:00Z" || row["user"] != "bob" || row["approved_by"] != "carol@example.com" ||
		!strings.HasPrefix(row["reason"], "'=") || !strings.Contains(row["details"], "decision_id=d1") {
		t.Errorf("row %v", row)
	}
	buf.Reset()
	if err := WriteEvidence(&buf, []grants.HistoryEntry{h}, "json"); err != nil {
		t.Fatal(err)
	}
	var js []map[string]any
	if json.Unmarshal(buf.Bytes(), &js) != nil || len(js) != 1 || js[0]["grant_id"] != "g1" || js[0]["time"] != "2026-12-07T11:00:00Z" {
		t.Errorf("json %s", buf.String())
	}
	if WriteEvidence(&buf, nil, "xml") == nil {
		t.Error("an unknown format was accepted")
	}
	for _, msg := range []string{EventStepUpStarted, EventFormKept} {
		if Evidential(Event{Msg: msg}) {
			t.Errorf("%s is kept as evidence", msg)
		}
	}
	if !Evidential(Event{Msg: EventUserDeprovisioned}) {
		t.Error("a de-provisioning is not kept as evidence")
	}
}
