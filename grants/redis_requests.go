package grants

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Access requests: created once, decided once (SET NX), listed by app and
// status.

func (s *RedisStore) CreateRequest(ctx context.Context, r Request) (Request, error) {
	if err := validateRequest(&r); err != nil {
		return r, err
	}
	idx, p := s.client.Pipeline(), s.client.Pipeline()
	queueRequest(ctx, idx, p, r)
	if _, err := idx.Exec(ctx); err != nil {
		return r, unavailable(err)
	}
	if _, err := p.Exec(ctx); err != nil {
		return r, unavailable(err)
	}
	_ = s.publish(ctx, Event{Kind: "user", UserKey: r.User.Key()}) // as in AddGrant
	return r, nil
}

// queueRequest queues the commands that write a new request: on idx the
// indexes (written first), on p the request itself.
func queueRequest(ctx context.Context, idx, p redis.Pipeliner, r Request) {
	b, _ := json.Marshal(r)
	idx.ZAdd(ctx, keyReqs, redis.Z{Score: float64(r.CreatedAt), Member: r.ID})
	idx.ZRemRangeByScore(ctx, keyReqs, "-inf", strconv.FormatInt(time.Now().Add(-keep).Unix(), 10))
	if r.Email != "" {
		ub, _ := json.Marshal(r.User)
		idx.SAdd(ctx, kEmail(r.Email), ub)
		idx.Expire(ctx, kEmail(r.Email), 10*keep)
	}
	p.Set(ctx, kReq(r.ID), b, keep)
}

// decodeRequest reads a request and its decision, if any, as MGET
// returned them; ok is false when the request is gone (or not written).
func decodeRequest(vals []any) (Request, bool, error) {
	var r Request
	raw, _ := vals[0].(string)
	if raw == "" {
		return r, false, nil
	}
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return r, false, err
	}
	if d, _ := vals[1].(string); d != "" {
		if err := json.Unmarshal([]byte(d), &r); err != nil { // the decided copy
			return r, false, err
		}
	}
	return r, true, nil
}

func (s *RedisStore) Request(ctx context.Context, id string) (Request, error) {
	vals, err := s.client.MGet(ctx, kReq(id), kReqDecision(id)).Result()
	if err != nil {
		return Request{}, unavailable(err)
	}
	r, ok, err := decodeRequest(vals)
	if err == nil && !ok {
		err = ErrNotFound
	}
	return r, err
}

func (s *RedisStore) Requests(ctx context.Context, f RequestFilter) ([]Request, error) {
	ids, err := s.client.ZRange(ctx, keyReqs, 0, -1).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.MGet(ctx, kReq(id), kReqDecision(id))
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, unavailable(err)
		}
	}
	var out []Request
	for _, cmd := range cmds {
		r, ok, err := decodeRequest(cmd.Val())
		if err != nil {
			return nil, err
		}
		if ok && matchRequest(&r, f) {
			out = append(out, r)
		}
	}
	sortRequests(out)
	return out, nil
}

// Decide stores the decided request with SET NX: of concurrent deciders,
// exactly one writes it, and only that one creates the grant.
func (s *RedisStore) Decide(ctx context.Context, id string, d Decision) (Request, *Grant, error) {
	r, err := s.Request(ctx, id)
	if err != nil {
		return r, nil, err
	}
	if r.Status != Pending {
		return r, nil, ErrAlreadyDecided
	}
	g := decide(&r, d)
	b, _ := json.Marshal(r)
	// The decision goes with the request (kept for keep after it was made).
	won, err := s.client.SetNX(ctx, kReqDecision(id), b, ttlFrom(d.Now.Unix(), r.CreatedAt+int64(keep/time.Second))).Result()
	if err != nil {
		return r, nil, unavailable(err)
	}
	if !won {
		cur, _ := s.Request(ctx, id)
		return cur, nil, ErrAlreadyDecided
	}
	if g != nil {
		if err := s.writeGrant(ctx, *g); err != nil {
			return r, nil, err
		}
	}
	_ = s.publish(ctx, Event{Kind: "user", UserKey: r.User.Key()}) // as in AddGrant
	return r, g, nil
}
