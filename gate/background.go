package gate

import "sync"

// background is the gate's work besides requests: writing usage records
// (usage.go) and the access reviews' schedule (reviews.go). Start runs
// it, Close stops it.
type background struct {
	mu      sync.Mutex
	stop    chan struct{}
	done    sync.WaitGroup
	started bool
}

// Start runs the gate's background work until Close: usage records are
// written to the grant store every UsageFlushEvery, and the reviews'
// schedule is checked 2 s after Start and every ReviewTick. Calling it
// again does nothing.
func (g *Gate) Start() {
	b := &g.background
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return
	}
	b.started, b.stop = true, make(chan struct{})
	b.done.Go(func() { g.usage.run(b.stop) })
	if len(g.cfg.Reviews) > 0 {
		b.done.Go(func() { g.runReviews(b.stop) })
	}
}

// Close stops the background work, writing the usage counted since the
// last write first. It is safe to call without Start, and more than
// once.
func (g *Gate) Close() {
	b := &g.background
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started || b.stop == nil {
		return
	}
	close(b.stop)
	b.done.Wait()
	b.stop = nil
}
