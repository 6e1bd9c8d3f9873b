package grants

import (
	"errors"
	"strconv"
	"testing"
	"time"
)

// TestMemKVReadersDoNotWait: a reader goes on, and sees the state
// before, while an update is under way; a failed update changes nothing;
// a prefix scan sees only its prefix, in order.
func TestMemKVReadersDoNotWait(t *testing.T) {
	m := NewMemory().(*kvStore).db
	for i := range 100 {
		if err := m.update(func(tx kvTx) error { return tx.put(bUserGrants, "u"+strconv.Itoa(i%10)+"/"+strconv.Itoa(i), nil) }); err != nil {
			t.Fatal(err)
		}
	}
	count := func(prefix string) (n int) {
		_ = m.view(func(tx kvTx) error {
			last := ""
			return tx.scan(bUserGrants, prefix, func(k string, _ []byte) error {
				if k <= last {
					t.Errorf("scan out of order: %q after %q", k, last)
				}
				last, n = k, n+1
				return nil
			})
		})
		return n
	}
	if n := count("u3/"); n != 10 {
		t.Errorf("u3's keys: %d, want 10", n)
	}
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		done <- m.update(func(tx kvTx) error {
			if err := tx.del(bUserGrants, "u3/3"); err != nil {
				return err
			}
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	read := make(chan int)
	go func() { read <- count("u3/") }()
	select {
	case n := <-read:
		if n != 10 {
			t.Errorf("a reader during an update sees %d keys, want the 10 before it", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a reader waited for the writer")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := count("u3/"); n != 9 {
		t.Errorf("after the update: %d keys, want 9", n)
	}
	failed := errors.New("failed")
	if err := m.update(func(tx kvTx) error {
		_ = tx.del(bUserGrants, "u3/13")
		_ = tx.put(bUserGrants, "u3/x", nil)
		return failed
	}); !errors.Is(err, failed) {
		t.Fatal(err)
	}
	if n := count("u3/"); n != 9 {
		t.Errorf("after a failed update: %d keys, want 9", n)
	}
}
