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
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keys. Everything about one user shares a hash tag, so that a
// lookup is one pipelined round trip even on Redis Cluster.
//
//	gh:{u}:g          hash  grant id → Grant JSON (expires after the last grant)
//	gh:{u}:r          string  sessions created up to this unix time are revoked
//	gh:{u}:s:<sid>    string  this session is revoked (expires with it)
//	gh:gid:<id>       string  grant id → user key
//	gh:req:<id>       string  Request JSON (as created)
//	gh:req:<id>:d     string  the decision (SET NX: exactly one wins)
//	gh:reqs           zset    request ids by creation time
//	gh:grant_users    set     user keys that have grants
//	gh:email:<email>  set     User JSON of users seen with this email
//	gh:revocations    zset    "s|<u>|<sid>" and "u|<u>" by end of validity
//	gh:events         pub/sub channel of Event JSON
const (
	keyEvents      = "gh:events"
	keyReqs        = "gh:reqs"
	keyGrantUsers  = "gh:grant_users"
	keyRevocations = "gh:revocations"
	// keep is how long records outlive their validity before Redis
	// drops them by itself.
	keep = 30 * 24 * time.Hour
)

func kGrants(uk string) string       { return "gh:{" + uk + "}:g" }
func kUserRev(uk string) string      { return "gh:{" + uk + "}:r" }
func kSession(uk, sid string) string { return "gh:{" + uk + "}:s:" + sid }
func kGrantID(id string) string      { return "gh:gid:" + id }
func kReq(id string) string          { return "gh:req:" + id }
func kReqDecision(id string) string  { return "gh:req:" + id + ":d" }
func kEmail(email string) string     { return "gh:email:" + strings.ToLower(email) }

// RedisStore keeps grants in Redis, shared by every node. Changes are
// published on gh:events so that every node's cache drops what changed at
// once.
type RedisStore struct {
	client redis.UniversalClient
	memo   grantMemo // decoded grants for Lookup
	events *broadcaster
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// RedisOptions bound every operation.
type RedisOptions struct {
	// Timeout bounds dialing, reading, writing and waiting for a pooled
	// connection (the grants_timeout).
	Timeout time.Duration
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
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
	}
	var client redis.UniversalClient
	switch {
	case u.Scheme == "redis+cluster" || u.Scheme == "rediss+cluster":
		opt, err := redis.ParseClusterURL(strings.Replace(rawURL, "+cluster", "", 1))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
		}
		opt.ContextTimeoutEnabled = true
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = o.Timeout, o.Timeout, o.Timeout, o.Timeout
		opt.MaxRetries = -1
		client = redis.NewClusterClient(opt)
	case u.Query().Get("master_name") != "":
		opt, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
		}
		opt.ContextTimeoutEnabled = true
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = o.Timeout, o.Timeout, o.Timeout, o.Timeout
		opt.MaxRetries = -1
		client = redis.NewFailoverClient(opt)
	case u.Scheme == "redis" || u.Scheme == "rediss":
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
		}
		opt.ContextTimeoutEnabled = true
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = o.Timeout, o.Timeout, o.Timeout, o.Timeout
		// A retry would take the request past its bound; the next request
		// tries again.
		opt.MaxRetries = -1
		client = redis.NewClient(opt)
	default:
		return nil, fmt.Errorf("%w: %q (want redis://, rediss://, redis+cluster:// or file://)", ErrUnsupportedURL, u.Scheme)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &RedisStore{client: client, events: newBroadcaster(), cancel: cancel, done: make(chan struct{})}
	go s.subscribe(ctx)
	return s, nil
}

// subscribe relays gh:events to Events. go-redis re-subscribes after a
// disconnect; each (re)subscription is told as a "resync" event, since
// changes made meanwhile were missed.
func (s *RedisStore) subscribe(ctx context.Context) {
	defer close(s.done)
	ps := s.client.Subscribe(ctx, keyEvents)
	defer ps.Close()
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

func (s *RedisStore) publish(ctx context.Context, e Event) {
	b, _ := json.Marshal(e)
	s.client.Publish(context.WithoutCancel(ctx), keyEvents, b)
}

func unavailable(err error) error {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrAlreadyDecided) || errors.Is(err, ErrInvalid) {
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
	st.UserRevokedAt, _ = strconv.ParseInt(rev.Val(), 10, 64)
	if sess != nil {
		st.SessionRevoked = sess.Val() > 0
	}
	return st, nil
}

// writeGrant queues the writes of a grant; the user's hash expires at
// hashExpiry, which is never earlier than any grant's in it.
func (s *RedisStore) writeGrant(ctx context.Context, pipe redis.Pipeliner, g Grant, hashExpiry time.Time) {
	uk := g.User.Key()
	b, _ := json.Marshal(g)
	expire := time.Unix(g.ExpiresAt, 0).Add(keep)
	pipe.HSet(ctx, kGrants(uk), g.ID, b)
	pipe.ExpireAt(ctx, kGrants(uk), hashExpiry)
	pipe.Set(ctx, kGrantID(g.ID), uk, time.Until(expire))
	pipe.SAdd(ctx, keyGrantUsers, uk)
	if g.Email != "" {
		ub, _ := json.Marshal(g.User)
		pipe.SAdd(ctx, kEmail(g.Email), ub)
		pipe.Expire(ctx, kEmail(g.Email), 10*keep)
	}
}

func (s *RedisStore) AddGrant(ctx context.Context, g Grant) (Grant, error) {
	if err := validateGrant(&g); err != nil {
		return g, err
	}
	exp, err := s.hashExpiry(ctx, g)
	if err != nil {
		return g, err
	}
	pipe := s.client.TxPipeline()
	s.writeGrant(ctx, pipe, g, exp)
	if _, err := pipe.Exec(ctx); err != nil {
		return g, unavailable(err)
	}
	s.publish(ctx, Event{Kind: "user", UserKey: g.User.Key()})
	return g, nil
}

// hashExpiry is when the user's grants hash may expire once g is in it:
// after g's and after whatever the hash already holds. (EXPIRE GT would do
// this in one command, but not every Redis in use has it.)
func (s *RedisStore) hashExpiry(ctx context.Context, g Grant) (time.Time, error) {
	exp := time.Unix(g.ExpiresAt, 0).Add(keep)
	ttl, err := s.client.TTL(ctx, kGrants(g.User.Key())).Result()
	if err != nil {
		return exp, unavailable(err)
	}
	if cur := time.Now().Add(ttl); ttl > 0 && cur.After(exp) {
		exp = cur
	}
	return exp, nil
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
	g, uk, err := s.grantByID(ctx, id)
	if err != nil {
		return g, err
	}
	if g.RevokedAt == 0 {
		g.RevokedAt, g.RevokedBy = now.Unix(), by
		b, _ := json.Marshal(g)
		if err := s.client.HSet(ctx, kGrants(uk), id, b).Err(); err != nil {
			return g, unavailable(err)
		}
	}
	s.publish(ctx, Event{Kind: "user", UserKey: uk})
	return g, nil
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
	var out []Grant
	for _, uk := range users {
		m, err := s.client.HGetAll(ctx, kGrants(uk)).Result()
		if err != nil {
			return nil, unavailable(err)
		}
		if len(m) == 0 && f.User == nil {
			s.client.SRem(ctx, keyGrantUsers, uk)
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

func (s *RedisStore) CreateRequest(ctx context.Context, r Request) (Request, error) {
	if err := validateRequest(&r); err != nil {
		return r, err
	}
	b, _ := json.Marshal(r)
	pipe := s.client.TxPipeline()
	pipe.Set(ctx, kReq(r.ID), b, keep)
	pipe.ZAdd(ctx, keyReqs, redis.Z{Score: float64(r.CreatedAt), Member: r.ID})
	pipe.ZRemRangeByScore(ctx, keyReqs, "-inf", strconv.FormatInt(time.Now().Add(-keep).Unix(), 10))
	if r.Email != "" {
		ub, _ := json.Marshal(r.User)
		pipe.SAdd(ctx, kEmail(r.Email), ub)
		pipe.Expire(ctx, kEmail(r.Email), 10*keep)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return r, unavailable(err)
	}
	s.publish(ctx, Event{Kind: "user", UserKey: r.User.Key()})
	return r, nil
}

// request reads a request with its decision, if any.
func (s *RedisStore) request(ctx context.Context, id string) (Request, error) {
	vals, err := s.client.MGet(ctx, kReq(id), kReqDecision(id)).Result()
	if err != nil {
		return Request{}, unavailable(err)
	}
	raw, _ := vals[0].(string)
	if raw == "" {
		return Request{}, ErrNotFound
	}
	var r Request
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return r, err
	}
	if d, _ := vals[1].(string); d != "" {
		_ = json.Unmarshal([]byte(d), &r) // the decided copy
	}
	return r, nil
}

func (s *RedisStore) Request(ctx context.Context, id string) (Request, error) {
	return s.request(ctx, id)
}

func (s *RedisStore) Requests(ctx context.Context, f RequestFilter) ([]Request, error) {
	ids, err := s.client.ZRange(ctx, keyReqs, 0, -1).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	var out []Request
	for _, id := range ids {
		r, err := s.request(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if matchRequest(&r, f) {
			out = append(out, r)
		}
	}
	sortRequests(out)
	return out, nil
}

// Decide stores the decided request with SET NX: of concurrent deciders,
// exactly one writes it, and only that one creates the grant.
func (s *RedisStore) Decide(ctx context.Context, id string, d Decision) (Request, *Grant, error) {
	r, err := s.request(ctx, id)
	if err != nil {
		return r, nil, err
	}
	if r.Status != Pending {
		return r, nil, ErrAlreadyDecided
	}
	g := decide(&r, d)
	b, _ := json.Marshal(r)
	won, err := s.client.SetNX(ctx, kReqDecision(id), b, keep).Result()
	if err != nil {
		return r, nil, unavailable(err)
	}
	if !won {
		cur, _ := s.request(ctx, id)
		return cur, nil, ErrAlreadyDecided
	}
	if g != nil {
		exp, err := s.hashExpiry(ctx, *g)
		if err != nil {
			return r, nil, err
		}
		pipe := s.client.TxPipeline()
		s.writeGrant(ctx, pipe, *g, exp)
		if _, err := pipe.Exec(ctx); err != nil {
			return r, nil, unavailable(err)
		}
	}
	s.publish(ctx, Event{Kind: "user", UserKey: r.User.Key()})
	return r, g, nil
}

func (s *RedisStore) RevokeSession(ctx context.Context, u User, sid string, until time.Time) error {
	uk := u.Key()
	ttl := time.Until(until)
	if ttl < time.Second {
		ttl = time.Second
	}
	pipe := s.client.TxPipeline()
	pipe.Set(ctx, kSession(uk, sid), "1", ttl)
	pipe.ZAdd(ctx, keyRevocations, redis.Z{Score: float64(until.Unix()), Member: "s|" + uk + "|" + sid})
	pipe.ZRemRangeByScore(ctx, keyRevocations, "-inf", strconv.FormatInt(time.Now().Unix(), 10))
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable(err)
	}
	s.publish(ctx, Event{Kind: "session_revoked", UserKey: uk, SessionID: sid, At: until.Unix()})
	return nil
}

func (s *RedisStore) RevokeUser(ctx context.Context, u User, at time.Time) error {
	uk := u.Key()
	pipe := s.client.TxPipeline()
	pipe.Set(ctx, kUserRev(uk), strconv.FormatInt(at.Unix(), 10), keep)
	pipe.ZAdd(ctx, keyRevocations, redis.Z{Score: float64(at.Add(keep).Unix()), Member: "u|" + uk + "|" + strconv.FormatInt(at.Unix(), 10)})
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable(err)
	}
	s.publish(ctx, Event{Kind: "user_revoked", UserKey: uk, At: at.Unix()})
	return nil
}

func (s *RedisStore) Users(ctx context.Context, email string) ([]User, error) {
	vals, err := s.client.SMembers(ctx, kEmail(email)).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	var out []User
	for _, v := range vals {
		var u User
		if json.Unmarshal([]byte(v), &u) == nil {
			out = append(out, u)
		}
	}
	return out, nil
}

func (s *RedisStore) Revocations(ctx context.Context, now time.Time) (Revocations, error) {
	rv := Revocations{Sessions: map[string]int64{}, Users: map[string]int64{}}
	zs, err := s.client.ZRangeByScoreWithScores(ctx, keyRevocations, &redis.ZRangeBy{Min: strconv.FormatInt(now.Unix(), 10), Max: "+inf"}).Result()
	if err != nil {
		return rv, unavailable(err)
	}
	for _, z := range zs {
		parts := strings.Split(z.Member.(string), "|")
		switch {
		case len(parts) == 3 && parts[0] == "s":
			rv.Sessions[parts[1]+"/"+parts[2]] = int64(z.Score)
		case len(parts) == 3 && parts[0] == "u":
			at, _ := strconv.ParseInt(parts[2], 10, 64)
			if at > rv.Users[parts[1]] {
				rv.Users[parts[1]] = at
			}
		}
	}
	return rv, nil
}

// AppendOnly reports whether Redis persists with appendonly yes, which
// production should (a restart must not lose grants or revocations).
func (s *RedisStore) AppendOnly(ctx context.Context) (bool, error) {
	v, err := s.client.ConfigGet(ctx, "appendonly").Result()
	if err != nil {
		return false, err
	}
	return v["appendonly"] == "yes", nil
}

func (s *RedisStore) Events() <-chan Event { return s.events.ch }

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
