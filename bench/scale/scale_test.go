package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

// TestScaleSmall runs the whole measurement with small counts against a
// real redis-server, so that the program does not rot between runs.
func TestScaleSmall(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	c := config{users: 2000, pending: 300, sessions: 200, lookups: 500}
	f, err := measure(context.Background(), c, r.Addr(), t.TempDir(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.stores) != 2 {
		t.Fatalf("%d stores measured, want 2", len(f.stores))
	}
	for _, sf := range f.stores {
		if sf.pendingListed != c.pending || sf.grantsListed != c.users {
			t.Errorf("%s: %d pending and %d grants listed, want %d and %d", sf.name, sf.pendingListed, sf.grantsListed, c.pending, c.users)
		}
		if sf.size[0] <= 0 || sf.lookup.p50 <= 0 || sf.cacheHit.p50 <= 0 || sf.entryBytes <= 0 {
			t.Errorf("%s: figures missing: %+v", sf.name, sf)
		}
	}
	var out strings.Builder
	f.print(&out)
	if lines := strings.Count(out.String(), "\n| "); lines < 10 {
		t.Errorf("the table has %d rows:\n%s", lines, out.String())
	}
}
