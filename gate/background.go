package gate

import "sync"

// background is the gate's work besides requests: writing usage records
// (usage.go). Start runs it, Close stops it.
type background struct {
	mu      sync.Mutex
	stop    chan struct{}
	done    sync.WaitGroup
	started bool
}

// Start runs the gate's background work until Close: usage records are
// written to the grant store every UsageFlushEvery. Calling it again does
// nothing.
func (g *Gate) Start() {
	b := &g.background
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return
	}
	b.started, b.stop = true, make(chan struct{})
	b.done.Go(func() { g.usage.run(b.stop) })
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
