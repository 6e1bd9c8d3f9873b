package grants

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestObservedStore: an observed store behaves as the store it wraps
// (the conformance suite), and its observer hears of every call, by
// name, with its error.
func TestObservedStore(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	conformance(t, func(t *testing.T) Store {
		s := NewMemory()
		t.Cleanup(func() { _ = s.Close() })
		return Observe(s, func(op string, took time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			if took < 0 {
				panic("negative duration")
			}
			calls[op]++
		})
	})
	mu.Lock()
	defer mu.Unlock()
	for _, op := range []string{"lookup", "add_grant", "revoke_grant", "grants", "create_request", "request", "requests",
		"decide", "revoke_session", "revoke_user", "users", "revocations", "note_email", "revoke_idp_session", "first_use",
		"put_pending", "take_pending", "append_history", "history",
		"put_scim_user", "scim_user", "scim_users", "delete_scim_user",
		"add_usage", "usage", "open_review", "review", "reviews", "decide_review_item", "review_item_applied",
		"revoke_resource", "lift_resource_revocation", "resource_revocations"} {
		if calls[op] == 0 {
			t.Errorf("no %s call observed (observed %v)", op, calls)
		}
	}
}

func TestOutage(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false}, {ErrNotFound, false}, {ErrAlreadyDecided, false}, {ErrConflict, false}, {fmt.Errorf("grant g1: %w", ErrInvalid), false},
		{ErrUnavailable, true}, {context.DeadlineExceeded, true}, {errors.New("dial tcp: connection refused"), true},
		{ErrNotDurable, true},
	} {
		if got := Outage(c.err); got != c.want {
			t.Errorf("Outage(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestCachePing: a store in this process is always reachable; an
// unreachable one is reported within the cache's timeout.
func TestCachePing(t *testing.T) {
	mem := NewCache(NewMemory(), 50*time.Millisecond)
	defer mem.Close()
	if err := mem.Ping(context.Background()); err != nil {
		t.Errorf("memory store: %v", err)
	}
	var pinged bool
	dead := NewCache(Observe(pingFails{NewMemory()}, func(op string, _ time.Duration, err error) {
		pinged = op == "ping" && err != nil
	}), 50*time.Millisecond)
	defer dead.Close()
	start := time.Now()
	if err := dead.Ping(context.Background()); err == nil || !pinged {
		t.Errorf("an unreachable store: Ping = %v, observed %v", err, pinged)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Ping took %s", took)
	}
}

// pingFails is a store whose Ping waits for its deadline.
type pingFails struct{ Store }

func (pingFails) Ping(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}
