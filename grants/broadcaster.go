package grants

import "sync"

// broadcaster delivers events without ever blocking a writer: a full
// channel drops the event, and caches fall back on their short TTL.
type broadcaster struct {
	mu     sync.Mutex
	ch     chan Event
	closed bool
}

func newBroadcaster() *broadcaster { return &broadcaster{ch: make(chan Event, 1024)} }

func (b *broadcaster) send(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	select {
	case b.ch <- e:
	default:
	}
}

func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.ch)
	}
}
