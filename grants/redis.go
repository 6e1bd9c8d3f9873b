package grants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Redis keys. Everything about one user shares a hash tag, so that a
// lookup is one pipelined round trip even on Redis Cluster, and so does
// everything about one request. No command or transaction ever spans two
// hash slots: the global indexes are updated by commands of their own,
// written before the records they point to, and every reader tolerates an
// index entry whose record is gone or not written yet. Every key of a
// user, session, request or grant expires; docs/redis.md has the table of
// every key and its expiry, which TestRedisKeysExpire checks.
//
//	gh:{u}:g          hash    grant id → Grant JSON: the grants not yet past retention at the last write (expires with the last)
//	gh:{u}:r          string  sessions created up to this unix time are revoked
//	gh:{u}:s:<sid>    string  this session is revoked (expires with it)
//	gh:idps:{<k>}     string  the IdP session k is ended: its sessions are revoked (expires with them)
//	gh:once:{<k>}     string  the one-time id k was used (expires with its record)
//	gh:gid:{<id>}     string  grant id → user key (expires with the grant's retention)
//	gh:req:{<id>}     string  Request JSON (as created)
//	gh:req:{<id>}:d   string  the decision (SET NX: exactly one wins; expires with the request)
//	gh:reqs           zset    index: request ids by creation time
//	gh:grant_users    set     index: user keys that have grants
//	gh:email:<email>  set     index: User JSON of users seen with this email
//	gh:history        zset    evidence (history entries as JSON) by time; trimmed to the history setting on each append
//	gh:revocations    zset    index: "s|<u>|<sid>", "u|<u>|<at>", "g|<u>|<id>|<at>|<by>", "i|<k>" by end of validity
//	gh:pending:{<k>}  string  a pending value (PutPending): expiry and sealed bytes, taken with GETDEL
//	gh:events         channel Event JSON
const (
	keyEvents      = "gh:events"
	keyReqs        = "gh:reqs"
	keyGrantUsers  = "gh:grant_users"
	keyRevocations = "gh:revocations"
	// keep is how long records outlive their validity before Redis
	// drops them by itself: the embedded stores' retention.
	keep = retention
)

func kGrants(uk string) string       { return "gh:{" + uk + "}:g" }
func kUserRev(uk string) string      { return "gh:{" + uk + "}:r" }
func kSession(uk, sid string) string { return "gh:{" + uk + "}:s:" + sid }
func kGrantID(id string) string      { return "gh:gid:{" + id + "}" }
func kReq(id string) string          { return "gh:req:{" + id + "}" }
func kReqDecision(id string) string  { return "gh:req:{" + id + "}:d" }
func kEmail(email string) string     { return "gh:email:" + strings.ToLower(email) }
func kIdPSession(k string) string    { return "gh:idps:{" + k + "}" }
func kOnce(k string) string          { return "gh:once:{" + k + "}" }

// RedisStore keeps grants in Redis (one server, Sentinel or Cluster),
// shared by every node. Changes are published on gh:events so that every
// node's cache drops what changed at once. Revocations are acknowledged
// only once every replica of the master that holds them has them (WAIT).
type RedisStore struct {
	client      redis.UniversalClient
	cluster     *redis.ClusterClient // when the store is a Cluster
	durableWait time.Duration
	memo        grantMemo // decoded grants for Lookup
	events      *broadcaster
	subscribed  atomic.Int32 // subscriptions to gh:events that are live
	node        string       // this store's name in its heartbeats
	beatsMu     sync.Mutex
	beats       map[string]int64 // subscription (master address, or "") → its latest heartbeat heard (Unix ns)
	cancel      context.CancelFunc
	done        chan struct{}
	once        sync.Once
}

// RedisOptions bound every operation.
type RedisOptions struct {
	// Timeout bounds dialing, reading, writing and waiting for a pooled
	// connection (the grants_timeout).
	Timeout time.Duration
	// DurableWait bounds how long a revocation waits for the master's
	// replicas to confirm it. Default: 1s.
	DurableWait time.Duration
}

// OpenRedis connects to Redis at rawURL:
//
//	redis://[user:pass@]host:port/db           one server
//	rediss://…                                  the same over TLS
//	redis://host:26379/db?master_name=mymaster&addr=host2:26379   Sentinel
//	redis+cluster://host:6379?addr=host2:6379   Cluster
//
// It does not wait for Redis: a store that is down at start works once
// Redis is up.
func OpenRedis(rawURL string, o RedisOptions) (*RedisStore, error) {
	if o.Timeout <= 0 {
		o.Timeout = 50 * time.Millisecond
	}
	if o.DurableWait <= 0 {
		o.DurableWait = time.Second
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
	}
	s := &RedisStore{durableWait: o.DurableWait, events: newBroadcaster(), done: make(chan struct{}), node: newID(), beats: map[string]int64{}}
	// A retry would take a request past its bound; the next request tries
	// again.
	switch {
	case u.Scheme == "redis+cluster" || u.Scheme == "rediss+cluster":
		opt, err := redis.ParseClusterURL(strings.Replace(rawURL, "+cluster", "", 1))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
		}
		opt.ContextTimeoutEnabled = true
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = o.Timeout, o.Timeout, o.Timeout, o.Timeout
		opt.MaxRetries = -1
		opt.MaintNotificationsConfig = noMaintNotifications()
		s.cluster = redis.NewClusterClient(opt)
		s.client = s.cluster
	case u.Query().Get("master_name") != "":
		opt, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
		}
		opt.ContextTimeoutEnabled = true
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = o.Timeout, o.Timeout, o.Timeout, o.Timeout
		opt.MaxRetries = -1
		s.client = redis.NewFailoverClient(opt) // go-redis has no maintenance notifications for Sentinel
	case u.Scheme == "redis" || u.Scheme == "rediss":
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
		}
		opt.ContextTimeoutEnabled = true
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = o.Timeout, o.Timeout, o.Timeout, o.Timeout
		opt.MaxRetries = -1
		opt.MaintNotificationsConfig = noMaintNotifications()
		s.client = redis.NewClient(opt)
	default:
		return nil, fmt.Errorf("%w: %q (want redis://, rediss://, redis+cluster:// or file://)", ErrUnsupportedURL, u.Scheme)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if s.cluster != nil {
		go s.subscribeEveryMaster(ctx)
	} else {
		go s.subscribe(ctx)
	}
	return s, nil
}

// noMaintNotifications turns off go-redis's maintenance notifications:
// Redis 7.0 has none, and their automatic fallback writes the client's
// options from one connection while another reads them (a data race the
// race detector found when a pub/sub and a command connect at once).
func noMaintNotifications() *maintnotifications.Config {
	return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

func unavailable(err error) error {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrAlreadyDecided) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrConflict) ||
		errors.Is(err, ErrNotDurable) || errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// Lookup reads the user's grants, the user's revocation and the session's
// in one pipelined round trip.
func (s *RedisStore) Lookup(ctx context.Context, u User, sid string, now time.Time) (State, error) {
	uk := u.Key()
	pipe := s.client.Pipeline()
	grants := pipe.HGetAll(ctx, kGrants(uk))
	rev := pipe.Get(ctx, kUserRev(uk))
	var sess *redis.IntCmd
	if sid != "" {
		sess = pipe.Exists(ctx, kSession(uk, sid))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return State{}, unavailable(err)
	}
	var st State
	for _, v := range grants.Val() {
		if g, err := s.memo.decodeString(v); err == nil {
			st.classify(g, now)
		}
	}
	sortGrants(st.Grants)
	st.UserRevokedAt, _ = strconv.ParseInt(rev.Val(), 10, 64) // "" (never revoked) is 0
	if sess != nil {
		st.SessionRevoked = sess.Val() > 0
	}
	return st, nil
}

// master returns a client of the master that holds key.
func (s *RedisStore) master(ctx context.Context, key string) (*redis.Client, error) {
	if s.cluster != nil {
		c, err := s.cluster.MasterForKey(ctx, key)
		return c, unavailable(err)
	}
	return s.client.(*redis.Client), nil
}

// durable runs write (commands on key's slot) on the master that holds
// key, then waits until every replica connected to that master confirms
// it (WAIT, within durableWait). A master without replicas acknowledges at
// once: its durability is its append-only file.
func (s *RedisStore) durable(ctx context.Context, key string, write func(redis.Pipeliner)) error {
	node, err := s.master(ctx, key)
	if err != nil {
		return err
	}
	conn := node.Conn() // WAIT counts the writes of its own connection
	defer conn.Close()
	if _, err := conn.Pipelined(ctx, func(p redis.Pipeliner) error { write(p); return nil }); err != nil {
		return unavailable(err)
	}
	// Every connected replica counts, also one still syncing: it is a
	// replica a failover may promote.
	info, err := conn.Info(ctx, "replication").Result()
	if err != nil {
		return unavailable(err)
	}
	replicas := 0
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			replicas, _ = strconv.Atoi(v) // unreadable counts as none: not durable
		}
	}
	if replicas == 0 {
		return nil
	}
	n, err := conn.Wait(ctx, replicas, s.durableWait).Result()
	if err != nil {
		return unavailable(err)
	}
	if int(n) < replicas {
		return fmt.Errorf("%w: %d of %d replicas of %s confirmed it within %s (it holds on the master and on every Gatehouse node now; a failover before the replicas catch up could lose it: run it again)",
			ErrNotDurable, n, replicas, node.Options().Addr, s.durableWait)
	}
	return nil
}

// writeGrant writes a grant at the time g.CreatedAt: the indexes first
// (harmless if the grant never follows), then the grant in the user's
// slot, with the user's grants past retention at that time dropped.
func (s *RedisStore) writeGrant(ctx context.Context, g Grant) error {
	held, err := s.client.HGetAll(ctx, kGrants(g.User.Key())).Result()
	if err != nil {
		return unavailable(err)
	}
	idx, p := s.client.Pipeline(), s.client.Pipeline()
	queueGrant(ctx, idx, p, g, held)
	if _, err := idx.Exec(ctx); err != nil {
		return unavailable(err)
	}
	if _, err := p.Exec(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

// queueGrant queues the commands that write g to a user whose grants
// hash holds held (then updated with g): on idx the indexes (and the
// removal of the dropped grants' ids), on p the user's hash. The hash loses the grants past
// retention at g.CreatedAt and expires with the last grant it keeps, so
// it never grows with a user's past grants, and outlives none of them.
// Two commands on one key, pipelined, not MULTI/EXEC: Redis 7.0 cannot
// replay a transaction from its append-only file once the default user
// is restricted (as docs/redis.md advises), and would lose it at the next
// restart. (Two writes for one user at the same moment can each set the
// hash's expiry from what it read; the later wins, and it can be short of
// the other's grant only when the two grants end more than the retention
// apart.)
func queueGrant(ctx context.Context, idx, p redis.Pipeliner, g Grant, held map[string]string) {
	uk, now := g.User.Key(), g.CreatedAt
	b, _ := json.Marshal(g)
	until := g.keptUntil()
	var dead []string
	for id, v := range held {
		var old Grant
		switch {
		case id == g.ID:
		case json.Unmarshal([]byte(v), &old) != nil:
			dead = append(dead, id) // unreadable: no grant to anyone
		case old.keptUntil() < now:
			dead = append(dead, id)
		default:
			until = max(until, old.keptUntil())
		}
	}
	idx.SAdd(ctx, keyGrantUsers, uk)
	idx.Set(ctx, kGrantID(g.ID), uk, ttlFrom(now, g.keptUntil()))
	for _, id := range dead {
		idx.Del(ctx, kGrantID(id))
	}
	if g.Email != "" {
		ub, _ := json.Marshal(g.User)
		idx.SAdd(ctx, kEmail(g.Email), ub)
		idx.Expire(ctx, kEmail(g.Email), 10*keep)
	}
	p.HSet(ctx, kGrants(uk), g.ID, b)
	if len(dead) > 0 {
		p.HDel(ctx, kGrants(uk), dead...)
	}
	p.Expire(ctx, kGrants(uk), ttlFrom(now, until))
	held[g.ID] = string(b)
}

// ttlFrom is how long a key must live from now to last until end (unix
// seconds, both by the caller's clock): a TTL, not an absolute time, so
// that Redis's clock and the caller's need not agree. At least a second.
func ttlFrom(now, end int64) time.Duration {
	return max(time.Duration(end-now)*time.Second, time.Second)
}

func (s *RedisStore) AddGrant(ctx context.Context, g Grant) (Grant, error) {
	if err := validateGrant(&g); err != nil {
		return g, err
	}
	if err := s.writeGrant(ctx, g); err != nil {
		return g, err
	}
	// A new grant that other nodes do not hear of reaches them when their
	// entry for the user is read again: access given late, never wrongly.
	_ = s.publish(ctx, Event{Kind: "user", UserKey: g.User.Key()})
	return g, nil
}

func (s *RedisStore) grantByID(ctx context.Context, id string) (Grant, string, error) {
	uk, err := s.client.Get(ctx, kGrantID(id)).Result()
	if errors.Is(err, redis.Nil) {
		return Grant{}, "", ErrNotFound
	}
	if err != nil {
		return Grant{}, "", unavailable(err)
	}
	v, err := s.client.HGet(ctx, kGrants(uk), id).Result()
	if errors.Is(err, redis.Nil) {
		return Grant{}, "", ErrNotFound
	}
	if err != nil {
		return Grant{}, "", unavailable(err)
	}
	var g Grant
	if err := json.Unmarshal([]byte(v), &g); err != nil {
		return Grant{}, "", err
	}
	return g, uk, nil
}

func (s *RedisStore) RevokeGrant(ctx context.Context, id, by string, now time.Time) (Grant, error) {
	g, _, err := s.grantByID(ctx, id)
	if err != nil {
		return g, err
	}
	g, err = s.revokeGrant(ctx, g, GrantRevocation{At: now.Unix(), By: by})
	return g, s.announce(ctx, err, Event{Kind: "grant_revoked", UserKey: g.User.Key(), GrantID: g.ID, At: g.ExpiresAt})
}

// applied reports whether a revocation took effect on the master: done,
// or done but not confirmed by the replicas (ErrNotDurable). Then it is
// listed and announced all the same, so that every node mirrors it and
// can write it back should a failover lose it.
func applied(err error) bool { return err == nil || errors.Is(err, ErrNotDurable) }

// revokeGrant marks g revoked (if it is not already), durably, and lists
// the revocation for the mirrors.
func (s *RedisStore) revokeGrant(ctx context.Context, g Grant, rv GrantRevocation) (Grant, error) {
	uk := g.User.Key()
	if g.RevokedAt == 0 {
		g.RevokedAt, g.RevokedBy = rv.At, rv.By
	}
	b, _ := json.Marshal(g)
	durable := s.durable(ctx, kGrants(uk), func(p redis.Pipeliner) { p.HSet(ctx, kGrants(uk), g.ID, b) })
	if !applied(durable) {
		return g, durable
	}
	member := "g|" + uk + "|" + g.ID + "|" + strconv.FormatInt(g.RevokedAt, 10) + "|" + strings.ReplaceAll(g.RevokedBy, "|", "/")
	idx := s.client.Pipeline()
	idx.ZAdd(ctx, keyRevocations, redis.Z{Score: float64(g.ExpiresAt), Member: member})
	idx.Expire(ctx, kGrantID(g.ID), ttlFrom(rv.At, g.keptUntil())) // kept for less now that it ended
	if _, err := idx.Exec(ctx); err != nil {
		return g, unavailable(err)
	}
	return g, durable
}

func (s *RedisStore) Grants(ctx context.Context, f GrantFilter) ([]Grant, error) {
	var users []string
	if f.User != nil {
		users = []string{f.User.Key()}
	} else {
		var err error
		if users, err = s.client.SMembers(ctx, keyGrantUsers).Result(); err != nil {
			return nil, unavailable(err)
		}
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(users))
	for i, uk := range users {
		cmds[i] = pipe.HGetAll(ctx, kGrants(uk))
	}
	if len(users) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, unavailable(err)
		}
	}
	var out []Grant
	for i, cmd := range cmds {
		m := cmd.Val()
		if len(m) == 0 && f.User == nil {
			s.client.SRem(ctx, keyGrantUsers, users[i]) // their grants expired and were dropped
		}
		for _, v := range m {
			var g Grant
			if json.Unmarshal([]byte(v), &g) == nil && matchGrant(&g, f) {
				out = append(out, g)
			}
		}
	}
	sortGrants(out)
	return out, nil
}

// AppendOnly reports whether Redis persists with appendonly yes, which
// production should (a restart must not lose grants or revocations). On
// a Cluster, every master must.
func (s *RedisStore) AppendOnly(ctx context.Context) (bool, error) {
	check := func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "persistence").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "aof_enabled:1") {
			return errNoAOF
		}
		return nil
	}
	var err error
	if s.cluster != nil {
		err = s.cluster.ForEachMaster(ctx, check)
	} else {
		err = check(ctx, s.client.(*redis.Client))
	}
	if errors.Is(err, errNoAOF) {
		return false, nil
	}
	return err == nil, err
}

var errNoAOF = errors.New("appendonly is off")

func (s *RedisStore) Events() <-chan Event { return s.events.ch }

// Subscribed reports whether events from other nodes are being received
// (a subscription to gh:events has been confirmed).
func (s *RedisStore) Subscribed() bool { return s.subscribed.Load() > 0 }

func (s *RedisStore) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		<-s.done
		s.events.close()
		err = s.client.Close()
	})
	return err
}

// Ping checks that Redis answers: every master of a Cluster, else the
// server (the Sentinel-elected master for a failover client).
func (s *RedisStore) Ping(ctx context.Context) error {
	if s.cluster != nil {
		return s.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
	}
	return s.client.Ping(ctx).Err()
}
