package grants

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Access reviews in Redis. A campaign and its decisions share a hash
// tag: opening is one SET NX (exactly one node wins), deciding an item is
// one HSETNX (exactly one reviewer wins). The app's index of campaigns is
// written first, by a command of its own; readers skip an id whose
// campaign is gone or not written yet. Resource revocations are one hash,
// written durably (WAIT, as every revocation).
//
//	gh:rv:{<id>}          string  Campaign JSON (SET NX), kept ReviewRetention after it ends
//	gh:rv:{<id>}:d        hash    item id → ItemDecision JSON (HSETNX)
//	gh:rvs:<app>          zset    index: the app's campaign ids by opening time
//	gh:resrevs            hash    user key|app|resource → ResourceRevocation JSON
const keyResourceRevs = "gh:resrevs"

func kReview(id string) string          { return "gh:rv:{" + id + "}" }
func kReviewDecisions(id string) string { return "gh:rv:{" + id + "}:d" }
func kReviews(app string) string        { return "gh:rvs:" + app }

func (s *RedisStore) OpenReview(ctx context.Context, c Campaign) (Campaign, bool, error) {
	if err := validateCampaign(&c); err != nil {
		return c, false, err
	}
	b, _ := json.Marshal(c)
	until := time.Unix(c.EndsAt, 0).Add(ReviewRetention)
	idx := s.client.Pipeline()
	idx.ZAdd(ctx, kReviews(c.App), redis.Z{Score: float64(c.OpenedAt), Member: c.ID})
	// Campaigns opened so long ago that theirs are gone leave the index.
	idx.ZRemRangeByScore(ctx, kReviews(c.App), "-inf", strconv.FormatInt(time.Now().Add(-2*ReviewRetention).Unix(), 10))
	idx.Expire(ctx, kReviews(c.App), 2*ReviewRetention)
	if _, err := idx.Exec(ctx); err != nil {
		return c, false, unavailable(err)
	}
	opened, err := s.client.SetNX(ctx, kReview(c.ID), b, time.Until(until)).Result()
	if err != nil {
		return c, false, unavailable(err)
	}
	if !opened {
		stored, err := s.Review(ctx, c.ID)
		return stored, false, err
	}
	return c, true, nil
}

// readReviews reads campaigns and their decisions in one round trip;
// gone ones are left out.
func (s *RedisStore) readReviews(ctx context.Context, ids []string) ([]Campaign, error) {
	p := s.client.Pipeline()
	heads := make([]*redis.StringCmd, len(ids))
	decisions := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		heads[i] = p.Get(ctx, kReview(id))
		decisions[i] = p.HGetAll(ctx, kReviewDecisions(id))
	}
	if len(ids) > 0 {
		if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, unavailable(err)
		}
	}
	out := []Campaign{}
	for i := range ids {
		b, err := heads[i].Bytes()
		if err != nil {
			continue // gone, or not written yet
		}
		var c Campaign
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, err
		}
		raw := map[string][]byte{}
		for k, v := range decisions[i].Val() {
			raw[k] = []byte(v)
		}
		withDecisions(&c, raw)
		out = append(out, c)
	}
	return out, nil
}

func (s *RedisStore) Review(ctx context.Context, id string) (Campaign, error) {
	cs, err := s.readReviews(ctx, []string{id})
	if err != nil {
		return Campaign{}, err
	}
	if len(cs) == 0 {
		return Campaign{}, ErrNotFound
	}
	return cs[0], nil
}

func (s *RedisStore) Reviews(ctx context.Context, app string, since time.Time) ([]Campaign, error) {
	from := "-inf"
	if !since.IsZero() {
		from = strconv.FormatInt(since.Unix(), 10)
	}
	ids, err := s.client.ZRangeByScore(ctx, kReviews(app), &redis.ZRangeBy{Min: from, Max: "+inf"}).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	cs, err := s.readReviews(ctx, ids)
	if err != nil {
		return nil, err
	}
	sortCampaigns(cs)
	return cs, nil
}

func (s *RedisStore) DecideReviewItem(ctx context.Context, campaign, item string, d ItemDecision) (ReviewItem, error) {
	if err := validateItemDecision(&d); err != nil {
		return ReviewItem{}, err
	}
	c, err := s.Review(ctx, campaign)
	if err != nil {
		return ReviewItem{}, err
	}
	p := c.Item(item)
	if p == nil {
		return ReviewItem{}, ErrNotFound
	}
	it := *p
	if it.Decision != nil {
		return it, ErrAlreadyDecided
	}
	b, _ := json.Marshal(d)
	pipe := s.client.Pipeline()
	won := pipe.HSetNX(ctx, kReviewDecisions(campaign), item, b)
	pipe.ExpireAt(ctx, kReviewDecisions(campaign), time.Unix(c.EndsAt, 0).Add(ReviewRetention))
	if _, err := pipe.Exec(ctx); err != nil {
		return it, unavailable(err)
	}
	if !won.Val() {
		return it, ErrAlreadyDecided
	}
	it.Decision = &d
	return it, nil
}

func (s *RedisStore) ReviewItemApplied(ctx context.Context, campaign, item string) error {
	v, err := s.client.HGet(ctx, kReviewDecisions(campaign), item).Result()
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	if err != nil {
		return unavailable(err)
	}
	var d ItemDecision
	if err := json.Unmarshal([]byte(v), &d); err != nil {
		return err
	}
	d.Applied = true
	b, _ := json.Marshal(d)
	return unavailable(s.client.HSet(ctx, kReviewDecisions(campaign), item, b).Err())
}

func (s *RedisStore) RevokeResource(ctx context.Context, r ResourceRevocation) error {
	if err := validateResourceRevocation(&r); err != nil {
		return err
	}
	b, _ := json.Marshal(r)
	err := s.durable(ctx, keyResourceRevs, func(p redis.Pipeliner) { p.HSet(ctx, keyResourceRevs, r.key(), b) })
	return s.announce(ctx, err, Event{Kind: "resources", UserKey: r.User.Key()})
}

func (s *RedisStore) LiftResourceRevocation(ctx context.Context, u User, app, resource string) (ResourceRevocation, error) {
	r := ResourceRevocation{User: u, App: app, Resource: resource}
	v, err := s.client.HGet(ctx, keyResourceRevs, r.key()).Result()
	if errors.Is(err, redis.Nil) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, unavailable(err)
	}
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return r, err
	}
	err = s.durable(ctx, keyResourceRevs, func(p redis.Pipeliner) { p.HDel(ctx, keyResourceRevs, r.key()) })
	return r, s.announce(ctx, err, Event{Kind: "resources", UserKey: u.Key()})
}

func (s *RedisStore) ResourceRevocations(ctx context.Context) ([]ResourceRevocation, error) {
	m, err := s.client.HGetAll(ctx, keyResourceRevs).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]ResourceRevocation, 0, len(m))
	for k, v := range m {
		var r ResourceRevocation
		if json.Unmarshal([]byte(v), &r) == nil && strings.HasPrefix(k, r.User.Key()+"|") {
			out = append(out, r)
		}
	}
	sortResourceRevocations(out)
	return out, nil
}
