package grants

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Events between nodes: every change is published on gh:events, and
// every node relays what it hears to its cache.

// subscribe relays gh:events to Events. go-redis re-subscribes after a
// disconnect (with Sentinel, to the master of the moment); each
// (re)subscription is told as a "resync" event, since changes made
// meanwhile were missed.
func (s *RedisStore) subscribe(ctx context.Context) {
	defer close(s.done)
	s.relay(ctx, s.client.Subscribe(ctx, keyEvents))
}

func (s *RedisStore) relay(ctx context.Context, ps *redis.PubSub) {
	defer ps.Close()
	live := false
	defer func() {
		if live {
			s.subscribed.Add(-1)
		}
	}()
	ch := ps.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			switch v := m.(type) {
			case *redis.Subscription:
				if v.Kind == "subscribe" {
					if !live {
						live = true
						s.subscribed.Add(1)
					}
					s.events.send(Event{Kind: "resync"})
				}
			case *redis.Message:
				var e Event
				if json.Unmarshal([]byte(v.Payload), &e) == nil {
					s.events.send(e)
				}
			}
		}
	}
}

// subscribeEveryMaster subscribes to gh:events on every master of the
// Cluster. A Cluster forwards every PUBLISH to every node, so each
// subscription hears every event; with one per master, a master that is
// down blinds no node. The set of masters is checked every second, so a
// promoted replica is subscribed to as well.
func (s *RedisStore) subscribeEveryMaster(ctx context.Context) {
	defer close(s.done)
	var mu sync.Mutex
	subs := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	defer func() {
		mu.Lock()
		for _, cancel := range subs {
			cancel()
		}
		mu.Unlock()
		wg.Wait()
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		masters := map[string]*redis.Client{}
		// A master that cannot be listed now is subscribed to at the next
		// round, a second later.
		_ = s.cluster.ForEachMaster(cctx, func(_ context.Context, c *redis.Client) error {
			mu.Lock()
			masters[c.Options().Addr] = c
			mu.Unlock()
			return nil
		})
		cancel()
		mu.Lock()
		for addr, c := range masters {
			if _, ok := subs[addr]; ok {
				continue
			}
			sctx, stop := context.WithCancel(ctx)
			subs[addr] = stop
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.relay(sctx, c.Subscribe(sctx, keyEvents))
			}()
		}
		for addr, stop := range subs {
			if _, ok := masters[addr]; !ok && len(masters) > 0 {
				stop()
				delete(subs, addr)
			}
		}
		mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// publish announces e. On a Cluster it goes through the master that holds
// the user's keys (just written to, so reachable), which forwards it to
// every node; elsewhere through the one master.
func (s *RedisStore) publish(ctx context.Context, e Event) {
	b, _ := json.Marshal(e)
	ctx = context.WithoutCancel(ctx)
	if s.cluster != nil && e.UserKey != "" {
		if node, err := s.cluster.MasterForKey(ctx, kGrants(e.UserKey)); err == nil {
			if node.Publish(ctx, keyEvents, b).Err() == nil {
				return
			}
		}
	}
	s.client.Publish(ctx, keyEvents, b)
}
