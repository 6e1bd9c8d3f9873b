package grants

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pending values are short-lived opaque blobs a node keeps for one
// browser between two of its requests (a form posted after the session
// ended, kept while the user signs in again). The caller seals them: the
// store never reads them. Each is taken at most once.

// Bounds of pending values.
const (
	MaxPendingTTL  = 24 * time.Hour
	MaxPendingSize = 16 << 20
	maxPendingKey  = 128
)

// checkPending validates PutPending's arguments.
func checkPending(key string, sealed []byte, ttl time.Duration) error {
	switch {
	case !validPendingKey(key):
		return fmt.Errorf("%w: a pending key is 1 to %d of A-Z a-z 0-9 _ -", ErrInvalid, maxPendingKey)
	case len(sealed) == 0 || len(sealed) > MaxPendingSize:
		return fmt.Errorf("%w: a pending value is 1 byte to %d bytes", ErrInvalid, MaxPendingSize)
	case ttl < time.Second || ttl > MaxPendingTTL:
		return fmt.Errorf("%w: a pending value is kept 1s to %s", ErrInvalid, MaxPendingTTL)
	}
	return nil
}

func validPendingKey(key string) bool {
	if key == "" || len(key) > maxPendingKey {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// pendingRecord is how every store keeps a pending value: when it
// expires (unix milliseconds, big-endian), then the value. The expiry is
// decided by the caller's clock, not only by the store's own expiry of
// keys.
func pendingRecord(sealed []byte, now time.Time, ttl time.Duration) []byte {
	b := make([]byte, 8, 8+len(sealed))
	binary.BigEndian.PutUint64(b, uint64(now.Add(ttl).UnixMilli()))
	return append(b, sealed...)
}

// openPendingRecord returns the value of a record still valid at now.
func openPendingRecord(b []byte, now time.Time) ([]byte, error) {
	if len(b) <= 8 {
		return nil, ErrNotFound
	}
	if now.UnixMilli() >= int64(binary.BigEndian.Uint64(b[:8])) {
		return nil, ErrNotFound
	}
	return b[8:], nil
}

func (s *kvStore) PutPending(_ context.Context, key string, sealed []byte, now time.Time, ttl time.Duration) error {
	if err := checkPending(key, sealed, ttl); err != nil {
		return err
	}
	return s.db.update(func(tx kvTx) error { return tx.put(bPending, key, pendingRecord(sealed, now, ttl)) })
}

func (s *kvStore) TakePending(_ context.Context, key string, now time.Time) ([]byte, error) {
	if !validPendingKey(key) {
		return nil, ErrNotFound
	}
	var b []byte
	err := s.db.update(func(tx kvTx) error {
		if b = tx.get(bPending, key); b == nil {
			return ErrNotFound
		}
		return tx.del(bPending, key)
	})
	if err != nil {
		return nil, err
	}
	return openPendingRecord(b, now)
}

// pendingPast reports whether a pending record is expired at now.
func pendingPast(now time.Time) func(string, []byte) bool {
	return func(_ string, v []byte) bool {
		_, err := openPendingRecord(v, now)
		return err != nil
	}
}

// kPending is a pending value's key: one key, so one Cluster slot.
func kPending(key string) string { return "gh:pending:{" + key + "}" }

func (s *RedisStore) PutPending(ctx context.Context, key string, sealed []byte, now time.Time, ttl time.Duration) error {
	if err := checkPending(key, sealed, ttl); err != nil {
		return err
	}
	return unavailable(s.client.Set(ctx, kPending(key), pendingRecord(sealed, now, ttl), ttl).Err())
}

func (s *RedisStore) TakePending(ctx context.Context, key string, now time.Time) ([]byte, error) {
	if !validPendingKey(key) {
		return nil, ErrNotFound
	}
	b, err := s.client.GetDel(ctx, kPending(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, unavailable(err)
	}
	return openPendingRecord(b, now)
}
