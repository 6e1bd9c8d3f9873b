package grants

import (
	"sync"
	"time"
)

// HeartbeatEvery is how often a store sends a "heartbeat" event through
// the same path as its other events. A heartbeat carries when it was sent
// (At, Unix nanoseconds, the node's clock); once a cache has applied it,
// it has applied every change announced before that moment, so its
// entries need no store round trip while heartbeats keep coming (see
// Cache).
const HeartbeatEvery = 200 * time.Millisecond

// broadcaster delivers events without ever blocking a writer: a full
// channel drops the event, and then a "resync" is delivered as soon as
// there is room again, before anything else, so that a cache drops what
// it holds rather than trust entries the lost event was about.
type broadcaster struct {
	mu     sync.Mutex
	ch     chan Event
	lost   bool // an event was dropped, and the resync that says so is not delivered yet
	closed bool
	stop   chan struct{}
}

func newBroadcaster() *broadcaster {
	return &broadcaster{ch: make(chan Event, 1024), stop: make(chan struct{})}
}

// newLocalBroadcaster is the broadcaster of a store whose writers send
// their events in this process, before they return: a heartbeat sent now
// follows every change made before now.
func newLocalBroadcaster() *broadcaster {
	b := newBroadcaster()
	go func() {
		t := time.NewTicker(HeartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case now := <-t.C:
				b.send(Event{Kind: "heartbeat", At: now.UnixNano()})
			}
		}
	}()
	return b
}

func (b *broadcaster) send(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if b.lost {
		select {
		case b.ch <- Event{Kind: "resync"}:
			b.lost = false
		default:
			return // still full: e is lost too, and the resync will say so
		}
	}
	select {
	case b.ch <- e:
	default:
		b.lost = true
	}
}

func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.stop)
		close(b.ch)
	}
}
