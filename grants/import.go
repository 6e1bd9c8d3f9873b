package grants

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Import writes grants and new (pending) requests in one batch, with the
// records and keys AddGrant and CreateRequest write: one transaction in
// the embedded stores, pipelined commands in Redis (the user's hashes
// read in one round trip, then the indexes, then the records). It fills
// in ids, and announces nothing (no events): it is for filling a store
// before nodes use it, as bench/scale does with a million users' grants,
// where a round trip or a file sync per grant would take an hour.
func Import(ctx context.Context, s Store, gs []Grant, rs []Request) error {
	for i := range gs {
		if err := validateGrant(&gs[i]); err != nil {
			return err
		}
	}
	for i := range rs {
		if err := validateRequest(&rs[i]); err != nil {
			return err
		}
	}
	if w, ok := s.(interface{ Unwrap() Store }); ok {
		s = w.Unwrap()
	}
	switch st := s.(type) {
	case *kvStore:
		return st.db.update(func(tx kvTx) error {
			for _, g := range gs {
				if err := putGrant(tx, g); err != nil {
					return err
				}
			}
			for _, r := range rs {
				if err := putRequest(tx, r); err != nil {
					return err
				}
			}
			return nil
		})
	case *RedisStore:
		return st.importBatch(ctx, gs, rs)
	}
	return fmt.Errorf("%w: Import takes a store of OpenBolt, NewMemory or OpenRedis, not %T", ErrInvalid, s)
}

func (s *RedisStore) importBatch(ctx context.Context, gs []Grant, rs []Request) error {
	read := s.client.Pipeline()
	hashes := map[string]*redis.MapStringStringCmd{}
	for _, g := range gs {
		if uk := g.User.Key(); hashes[uk] == nil {
			hashes[uk] = read.HGetAll(ctx, kGrants(uk))
		}
	}
	if len(hashes) > 0 {
		if _, err := read.Exec(ctx); err != nil {
			return unavailable(err)
		}
	}
	held := map[string]map[string]string{}
	for uk, cmd := range hashes {
		held[uk] = cmd.Val()
	}
	idx, p := s.client.Pipeline(), s.client.Pipeline()
	for _, g := range gs {
		queueGrant(ctx, idx, p, g, held[g.User.Key()]) // a user's later grants see the earlier ones
	}
	for _, r := range rs {
		queueRequest(ctx, idx, p, r)
	}
	for _, pipe := range []redis.Pipeliner{idx, p} {
		if pipe.Len() == 0 {
			continue
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return unavailable(err)
		}
	}
	return nil
}
