package policies

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const (
	allowPolicy = "package gatehouse\n\ndecision := {\"allow\": true, \"reason\": \"A\"}\n"
	denyPolicy  = "package gatehouse\n\ndecision := {\"allow\": false, \"reason\": \"B\"}\n"
)

func newTestEngine(t *testing.T, dir string) (*Engine, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	e, err := NewEngine(dir, Options{}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, logs
}

// replace writes a file the way editors and deploy tools do: a new file,
// renamed over the old one.
func replace(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within 5s", what)
	return 0
}

func decide(t *testing.T, e *Engine) Decision {
	t.Helper()
	d, err := e.Current().Decide(context.Background(), (&Input{App: "x"}).Value())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestEngineHotReload(t *testing.T) {
	dir := writePolicy(t, map[string]string{"p.rego": allowPolicy})
	e, logs := newTestEngine(t, dir)
	first := e.Current().ID
	if d := decide(t, e); !d.Allow {
		t.Fatal("first revision should allow")
	}

	// A valid change is picked up by the watcher.
	replace(t, filepath.Join(dir, "p.rego"), denyPolicy)
	took := waitFor(t, "valid change", func() bool { return e.Current().ID != first })
	t.Logf("valid change served after %s", took.Round(time.Millisecond))
	if d := decide(t, e); d.Allow || d.Reason != "B" {
		t.Fatalf("after reload: %+v", d)
	}
	second := e.Current().ID

	// An invalid change is refused, loudly; the last good one serves.
	var reloads atomic.Int32
	e.mu.Lock()
	e.onReload = func(*Revision, error) { reloads.Add(1) }
	e.mu.Unlock()
	replace(t, filepath.Join(dir, "p.rego"), "package gatehouse\n\ndecision := {\n")
	waitFor(t, "invalid change seen", func() bool { return reloads.Load() > 0 })
	if e.Current().ID != second {
		t.Fatal("an invalid policy replaced the good one")
	}
	if d := decide(t, e); d.Reason != "B" {
		t.Fatalf("after a refused change: %+v", d)
	}
	refused := logs.FilterMessage("policy change refused; the last good revision keeps serving").All()
	if len(refused) == 0 || refused[0].ContextMap()["revision"] != second {
		t.Errorf("no clear log line for the refused change: %v", logs.All())
	}
	if st := e.Stats(); st.Revision != second || st.Refused == 0 || !st.Failing || st.Reloads == 0 {
		t.Errorf("stats after a refused change: %+v", st)
	}

	// A new file in a new subdirectory is watched too.
	if err := os.MkdirAll(filepath.Join(dir, "more"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new subdirectory watched", func() bool { return slices.Contains(e.watcher.WatchList(), filepath.Join(dir, "more")) })
	replace(t, filepath.Join(dir, "p.rego"), allowPolicy)
	replace(t, filepath.Join(dir, "more", "extra.rego"), "package gatehouse.more\n\nx := 1\n")
	waitFor(t, "new subdirectory file", func() bool {
		for _, f := range e.Current().Files {
			if f == filepath.Join("more", "extra.rego") {
				return true
			}
		}
		return false
	})
	if st := e.Stats(); st.Failing {
		t.Errorf("still failing after a good reload: %+v", st)
	}
}

// TestEngineAtomicSwap evaluates continuously while the policy flips: every
// answer is one revision's whole answer, never a mix, never an error.
func TestEngineAtomicSwap(t *testing.T) {
	dir := writePolicy(t, map[string]string{"p.rego": allowPolicy})
	// A generous bound: on a starved machine an evaluation can wait for a
	// CPU past the default 100 ms, and then it is an error (policy_error,
	// a deny), not a mix of revisions; this test is about the swap.
	core, _ := observer.New(zap.InfoLevel)
	e, err := NewEngine(dir, Options{Timeout: time.Minute}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var evals, bad atomic.Int64
	var mu sync.Mutex
	var seen []string
	for range 4 {
		wg.Go(func() {
			in := (&Input{App: "x"}).Value()
			for {
				select {
				case <-stop:
					return
				default:
				}
				d, err := e.Current().Decide(context.Background(), in)
				evals.Add(1)
				if err != nil || !(d.Allow && d.Reason == "A" || !d.Allow && d.Reason == "B") {
					bad.Add(1)
					mu.Lock()
					if len(seen) < 5 {
						seen = append(seen, fmt.Sprintf("%+v, %v", d, err))
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range 20 {
		policy := allowPolicy
		if i%2 == 0 {
			policy = denyPolicy
		}
		if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(policy), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d evaluations saw a broken decision, such as: %s", bad.Load(), evals.Load(), strings.Join(seen, "; "))
	}
	t.Logf("%d evaluations across 20 swaps", evals.Load())
}

func TestNewEngineRefusesInvalid(t *testing.T) {
	_, err := NewEngine(writePolicy(t, map[string]string{"p.rego": "package gatehouse\n\ndecision := \"x\"\n"}), Options{}, nil)
	if !errors.Is(err, ErrLoad) {
		t.Fatalf("err = %v", err)
	}
}
