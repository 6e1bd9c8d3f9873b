package grants

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestPurgeDropsExpiredPending: the embedded stores' purge removes
// pending values past their expiry, and keeps the others.
func TestPurgeDropsExpiredPending(t *testing.T) {
	ctx := context.Background()
	s := NewMemory().(*kvStore)
	defer s.Close()
	_ = s.PutPending(ctx, "old", []byte("a"), t0, time.Minute)
	_ = s.PutPending(ctx, "new", []byte("b"), t0, time.Hour)
	if err := s.purge(t0.Add(2 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TakePending(ctx, "old", t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("an expired pending value survived the purge: %v", err)
	}
	if v, err := s.TakePending(ctx, "new", t0); err != nil || string(v) != "b" {
		t.Errorf("a live pending value was purged: %q %v", v, err)
	}
}
