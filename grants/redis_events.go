package grants

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Events between nodes: every change is published on gh:events, and
// every node relays what it hears to its cache. Each node also publishes
// a heartbeat there every HeartbeatEvery and relays its own when it comes
// back: Redis delivers a channel's messages in the order it executed the
// PUBLISHes, so a heartbeat heard proves that every event published
// before it was sent has been heard too, and a subscription that died or
// stalled without closing shows as heartbeats that stop.

// subscribe relays gh:events to Events. go-redis re-subscribes after a
// disconnect (with Sentinel, to the master of the moment); each
// (re)subscription is told as a "resync" event, since changes made
// meanwhile were missed.
func (s *RedisStore) subscribe(ctx context.Context) {
	defer close(s.done)
	go s.heartbeat(ctx)
	s.relay(ctx, s.client.Subscribe(ctx, keyEvents), "")
}

// heartbeat publishes this node's heartbeat every HeartbeatEvery: on the
// server, or on every master of a Cluster, where each subscription
// vouches only for the events published on its own master.
func (s *RedisStore) heartbeat(ctx context.Context) {
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := time.Now().UnixNano() // before the PUBLISH: what it vouches for errs on the safe side
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		if s.cluster != nil {
			_ = s.cluster.ForEachMaster(cctx, func(ctx context.Context, c *redis.Client) error {
				b, _ := json.Marshal(Event{Kind: "heartbeat", Node: s.node, Via: c.Options().Addr, At: at})
				return c.Publish(ctx, keyEvents, b).Err()
			})
		} else {
			b, _ := json.Marshal(Event{Kind: "heartbeat", Node: s.node, At: at})
			s.client.Publish(cctx, keyEvents, b) // one that fails is missed: the cache stops trusting its entries
		}
		cancel()
	}
}

// beat records this node's heartbeat heard on the subscription via (a
// Cluster master's address, or ""), and tells the cache the time up to
// which every subscription has heard everything: the oldest of their
// latest heartbeats. The caller has relayed every event it heard before.
func (s *RedisStore) beat(via string, at int64) {
	s.beatsMu.Lock()
	defer s.beatsMu.Unlock()
	if _, ok := s.beats[via]; !ok {
		return // a subscription that ended
	}
	s.beats[via] = at
	oldest := at
	for _, t := range s.beats {
		oldest = min(oldest, t)
	}
	if oldest > 0 {
		s.events.send(Event{Kind: "heartbeat", At: oldest})
	}
}

// track adds (or, with on false, removes) a subscription whose
// heartbeats count: until its first heartbeat, it vouches for nothing.
func (s *RedisStore) track(via string, on bool) {
	s.beatsMu.Lock()
	defer s.beatsMu.Unlock()
	if on {
		s.beats[via] = 0
	} else {
		delete(s.beats, via)
	}
}

func (s *RedisStore) relay(ctx context.Context, ps *redis.PubSub, via string) {
	defer ps.Close()
	s.track(via, true)
	defer s.track(via, false)
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
				switch {
				case json.Unmarshal([]byte(v.Payload), &e) != nil:
				case e.Kind == "heartbeat":
					if e.Node == s.node && e.Via == via {
						s.beat(via, e.At)
					}
				default:
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
	go s.heartbeat(ctx)
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
				s.relay(sctx, c.Subscribe(sctx, keyEvents), addr)
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
// every node; elsewhere through the one master. A failed PUBLISH is tried
// again, twice: caches that hear heartbeats trust their entries until an
// event drops them.
func (s *RedisStore) publish(ctx context.Context, e Event) error {
	b, _ := json.Marshal(e)
	ctx = context.WithoutCancel(ctx)
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 50 * time.Millisecond)
		}
		if s.cluster != nil && e.UserKey != "" {
			if node, nerr := s.cluster.MasterForKey(ctx, kGrants(e.UserKey)); nerr == nil {
				if err = node.Publish(ctx, keyEvents, b).Err(); err == nil {
					return nil
				}
			}
		}
		if err = s.client.Publish(ctx, keyEvents, b).Err(); err == nil {
			return nil
		}
	}
	return err
}

// announce publishes a revocation's event once the revocation is stored
// (err is what storing it returned). One that other nodes were not told
// of is reported not durable: it holds in the store and on this node, the
// other nodes take it at their next reload of the revocations in force
// (within MirrorEvery), and running it again announces it.
func (s *RedisStore) announce(ctx context.Context, err error, e Event) error {
	if !applied(err) {
		return err
	}
	if perr := s.publish(ctx, e); perr != nil && err == nil {
		return fmt.Errorf("%w: it is stored, but telling the other Gatehouse nodes failed (%v); they apply it within %s, or at once if you run it again",
			ErrNotDurable, perr, MirrorEvery)
	}
	return err
}
