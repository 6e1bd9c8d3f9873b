package module

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// libraryCopy copies the policy library (without its tests) to a new
// directory, its data edited by edit.
func libraryCopy(b *testing.B, edit func(string) string) string {
	b.Helper()
	dir := b.TempDir()
	for _, f := range []string{"gatehouse/decision.rego", "gatehouse/approval.rego", "entitlements/data.json"} {
		content, err := os.ReadFile(filepath.Join("..", "policies", f))
		if err != nil {
			b.Fatal(err)
		}
		if strings.HasSuffix(f, ".json") {
			content = []byte(edit(string(content)))
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), content, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// BenchmarkServeHTTPShadow is BenchmarkServeHTTP's 1000 users × 100
// paths with policy_shadow: a candidate that agrees on every request (a
// copy of the library, another revision), and one that disagrees on nine
// requests in ten (staff's X-Projects-Role changes), each of which
// writes an event line on a shadow worker; and the first with its
// workers stopped. The request path only queues a copy of its input; the
// workers run beside it, on the same cores, and their allocations count
// in B/op.
func BenchmarkServeHTTPShadow(b *testing.B) {
	agreeing := func(s string) string { return strings.Replace(s, "{", `{"bench": "another revision",`, 1) }
	for _, c := range []struct {
		name string
		edit func(string) string
		stop bool
	}{
		{"agreeing", agreeing, false},
		{"disagreeing", func(s string) string {
			return strings.Replace(s, `"value": "member"`, `"value": "staff-member"`, 1)
		}, false},
		// The request path alone: no worker competes for the cores, and
		// once the queue is full every job is copied and dropped.
		{"workers-stopped", agreeing, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir := libraryCopy(b, c.edit)
			h := benchHandlerWith(b, true, func(h *Handler) { h.PolicyShadow = dir })
			shadow, err := h.policyShadow()
			if err != nil {
				b.Fatal(err)
			}
			if c.stop {
				_ = shadow.Close()
			}
			runServeBench(b, h, benchRequests(benchUsers(b, h, 1000), 100))
			st := shadow.Stats()
			b.ReportMetric(float64(st.Dropped)/float64(st.Dropped+st.Evaluated+uint64(st.Queued)), "dropped/op")
		})
	}
}
