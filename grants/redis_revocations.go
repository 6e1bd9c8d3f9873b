package grants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Revocations: of sessions, users and grants, confirmed by the replicas
// before they are reported done, listed for every node's mirror, and
// written back from a mirror after a failover lost them.

func (s *RedisStore) RevokeSession(ctx context.Context, u User, sid string, until time.Time) error {
	err := s.revokeSession(ctx, u.Key(), sid, until.Unix())
	return s.announce(ctx, err, Event{Kind: "session_revoked", UserKey: u.Key(), SessionID: sid, At: until.Unix()})
}

func (s *RedisStore) revokeSession(ctx context.Context, uk, sid string, until int64) error {
	ttl := time.Until(time.Unix(until, 0))
	if ttl < time.Second {
		ttl = time.Second
	}
	durable := s.durable(ctx, kSession(uk, sid), func(p redis.Pipeliner) { p.Set(ctx, kSession(uk, sid), "1", ttl) })
	if !applied(durable) {
		return durable
	}
	idx := s.client.Pipeline()
	idx.ZAdd(ctx, keyRevocations, redis.Z{Score: float64(until), Member: "s|" + uk + "|" + sid})
	idx.ZRemRangeByScore(ctx, keyRevocations, "-inf", strconv.FormatInt(time.Now().Unix(), 10))
	if _, err := idx.Exec(ctx); err != nil {
		return unavailable(err)
	}
	return durable
}

func (s *RedisStore) RevokeUser(ctx context.Context, u User, at time.Time) error {
	err := s.revokeUser(ctx, u.Key(), at.Unix())
	return s.announce(ctx, err, Event{Kind: "user_revoked", UserKey: u.Key(), At: at.Unix()})
}

func (s *RedisStore) revokeUser(ctx context.Context, uk string, at int64) error {
	v := strconv.FormatInt(at, 10)
	durable := s.durable(ctx, kUserRev(uk), func(p redis.Pipeliner) { p.Set(ctx, kUserRev(uk), v, keep) })
	if !applied(durable) {
		return durable
	}
	m := redis.Z{Score: float64(time.Unix(at, 0).Add(keep).Unix()), Member: "u|" + uk + "|" + v}
	if err := s.client.ZAdd(ctx, keyRevocations, m).Err(); err != nil {
		return unavailable(err)
	}
	return durable
}

func (s *RedisStore) RevokeIdPSession(ctx context.Context, is IdPSession, until time.Time) error {
	if err := validIdPSession(is); err != nil {
		return err
	}
	k := is.Key()
	err := s.revokeIdPSession(ctx, k, until.Unix())
	return s.announce(ctx, err, Event{Kind: "idp_session_revoked", SessionID: k, At: until.Unix()})
}

func (s *RedisStore) revokeIdPSession(ctx context.Context, k string, until int64) error {
	ttl := time.Until(time.Unix(until, 0))
	if ttl < time.Second {
		ttl = time.Second
	}
	durable := s.durable(ctx, kIdPSession(k), func(p redis.Pipeliner) { p.Set(ctx, kIdPSession(k), strconv.FormatInt(until, 10), ttl) })
	if !applied(durable) {
		return durable
	}
	idx := s.client.Pipeline()
	idx.ZAdd(ctx, keyRevocations, redis.Z{Score: float64(until), Member: "i|" + k})
	idx.ZRemRangeByScore(ctx, keyRevocations, "-inf", strconv.FormatInt(time.Now().Unix(), 10))
	if _, err := idx.Exec(ctx); err != nil {
		return unavailable(err)
	}
	return durable
}

// FirstUse sets the id's key only if it is not there (SET NX), expiring
// with its record: one command, so exactly one caller wins. It is not
// waited on by replicas: a failover that lost it lets one replay through,
// which can only do again what the first use did.
func (s *RedisStore) FirstUse(ctx context.Context, id string, now, until time.Time) (bool, error) {
	if err := validateOnce(id, now, until); err != nil {
		return false, err
	}
	ttl := until.Sub(now)
	if ttl < time.Second {
		ttl = time.Second
	}
	first, err := s.client.SetNX(ctx, kOnce(onceKey(id)), strconv.FormatInt(until.Unix(), 10), ttl).Result()
	if err != nil {
		return false, unavailable(err)
	}
	return first, nil
}

func (s *RedisStore) NoteEmail(ctx context.Context, u User, email string) error {
	if email == "" || !u.valid() {
		return fmt.Errorf("%w: NoteEmail needs an email and a user", ErrInvalid)
	}
	ub, _ := json.Marshal(u)
	p := s.client.Pipeline()
	p.SAdd(ctx, kEmail(email), ub)
	p.Expire(ctx, kEmail(email), 10*keep)
	if _, err := p.Exec(ctx); err != nil {
		return unavailable(err)
	}
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
	rv := newRevocations()
	zs, err := s.client.ZRangeByScoreWithScores(ctx, keyRevocations, &redis.ZRangeBy{Min: strconv.FormatInt(now.Unix(), 10), Max: "+inf"}).Result()
	if err != nil {
		return rv, unavailable(err)
	}
	for _, z := range zs {
		parts := strings.Split(z.Member.(string), "|")
		switch {
		case len(parts) == 2 && parts[0] == "i":
			rv.IdPSessions[parts[1]] = int64(z.Score)
		case len(parts) == 3 && parts[0] == "s":
			rv.Sessions[parts[1]+"/"+parts[2]] = int64(z.Score)
		case len(parts) == 3 && parts[0] == "u":
			at, _ := strconv.ParseInt(parts[2], 10, 64)
			if at > rv.Users[parts[1]] {
				rv.Users[parts[1]] = at
			}
		case len(parts) == 5 && parts[0] == "g":
			at, _ := strconv.ParseInt(parts[3], 10, 64)
			rv.Grants[parts[2]] = GrantRevocation{UserKey: parts[1], Until: int64(z.Score), At: at, By: parts[4]}
		}
	}
	return rv, s.present(ctx, &rv)
}

// present drops from rv the revocations whose record is not there. On a
// Cluster the index and the records live on different masters, so a
// failover can lose a record its index still lists: only what the records
// hold counts, so that a node's mirror writes the rest back.
func (s *RedisStore) present(ctx context.Context, rv *Revocations) error {
	if rv.empty() {
		return nil
	}
	pipe := s.client.Pipeline()
	sessions := map[string]*redis.IntCmd{}
	for k := range rv.Sessions {
		uk, sid, _ := strings.Cut(k, "/")
		sessions[k] = pipe.Exists(ctx, kSession(uk, sid))
	}
	idps := map[string]*redis.IntCmd{}
	for k := range rv.IdPSessions {
		idps[k] = pipe.Exists(ctx, kIdPSession(k))
	}
	users := map[string]*redis.StringCmd{}
	for uk := range rv.Users {
		users[uk] = pipe.Get(ctx, kUserRev(uk))
	}
	grants := map[string]*redis.StringCmd{}
	for id, g := range rv.Grants {
		grants[id] = pipe.HGet(ctx, kGrants(g.UserKey), id)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return unavailable(err)
	}
	for k, cmd := range sessions {
		if cmd.Val() == 0 {
			delete(rv.Sessions, k)
		}
	}
	for k, cmd := range idps {
		if cmd.Val() == 0 {
			delete(rv.IdPSessions, k)
		}
	}
	for uk, cmd := range users {
		if at, _ := strconv.ParseInt(cmd.Val(), 10, 64); at < rv.Users[uk] {
			if at > 0 {
				rv.Users[uk] = at
			} else {
				delete(rv.Users, uk)
			}
		}
	}
	for id, cmd := range grants {
		var g Grant
		if json.Unmarshal([]byte(cmd.Val()), &g) != nil || g.RevokedAt == 0 {
			delete(rv.Grants, id)
		}
	}
	return nil
}

// Restore writes back revocations a node's mirror holds and the store
// lost: a failover whose new master had not received the last writes
// (every node's mirror holds them already, so an announcement that fails
// changes nothing). A
// user revocation is written only when later than the store's; a grant
// revocation needs the grant (a grant the store lost is no grant).
func (s *RedisStore) Restore(ctx context.Context, rv Revocations) error {
	for k, until := range rv.Sessions {
		uk, sid, _ := strings.Cut(k, "/")
		if err := s.revokeSession(ctx, uk, sid, until); !applied(err) {
			return err
		}
		_ = s.publish(ctx, Event{Kind: "session_revoked", UserKey: uk, SessionID: sid, At: until})
	}
	for k, until := range rv.IdPSessions {
		if err := s.revokeIdPSession(ctx, k, until); !applied(err) {
			return err
		}
		_ = s.publish(ctx, Event{Kind: "idp_session_revoked", SessionID: k, At: until})
	}
	for uk, at := range rv.Users {
		cur, err := s.client.Get(ctx, kUserRev(uk)).Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return unavailable(err)
		}
		if cur >= at {
			continue
		}
		if err := s.revokeUser(ctx, uk, at); !applied(err) {
			return err
		}
		_ = s.publish(ctx, Event{Kind: "user_revoked", UserKey: uk, At: at})
	}
	for id, gr := range rv.Grants {
		v, err := s.client.HGet(ctx, kGrants(gr.UserKey), id).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return unavailable(err)
		}
		var g Grant
		if json.Unmarshal([]byte(v), &g) != nil {
			continue
		}
		if _, err := s.revokeGrant(ctx, g, gr); !applied(err) {
			return err
		}
		_ = s.publish(ctx, Event{Kind: "grant_revoked", UserKey: gr.UserKey, GrantID: id, At: g.ExpiresAt})
	}
	return nil
}
