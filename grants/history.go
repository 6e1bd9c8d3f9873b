package grants

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// HistoryEntry is one thing that happened to access, kept for evidence:
// a grant requested, approved, revoked or expired, a user de-provisioned,
// a review decided. It is the audit event's message and fields (string
// values, never a token or a cookie), and the app it happened in ("" for
// an operator's action, which concerns every app).
type HistoryEntry struct {
	ID     string            `json:"id"`
	At     int64             `json:"at"` // unix seconds
	App    string            `json:"app,omitempty"`
	Event  string            `json:"event"`
	Fields map[string]string `json:"fields,omitempty"`
}

// HistoryFilter selects entries: at or after Since, of App (or every app,
// and operators' actions, when App is ""), at most Limit (0: all).
type HistoryFilter struct {
	Since time.Time
	App   string
	Limit int
}

// DefaultHistory is how long history is kept by default (the history
// directive): a yearly audit, plus a month.
const DefaultHistory = 400 * 24 * time.Hour

// newHistoryID is a random, time-ordered-enough id for an entry.
func newHistoryID() string { return rand.Text()[:16] }

// historyKey orders entries by time in the embedded stores.
func historyKey(e HistoryEntry) string { return fmt.Sprintf("%016x/%s", e.At, e.ID) }

// matches reports whether e is selected by f.
func (f HistoryFilter) matches(e HistoryEntry) bool {
	return e.At >= f.Since.Unix() && (f.App == "" || e.App == f.App || e.App == "")
}

// checkHistory refuses an entry that cannot be kept.
func checkHistory(e *HistoryEntry) error {
	if e.Event == "" || e.At <= 0 {
		return fmt.Errorf("%w: a history entry needs an event and a time", ErrInvalid)
	}
	if e.ID == "" {
		e.ID = newHistoryID()
	}
	return nil
}

func (s *kvStore) AppendHistory(_ context.Context, e HistoryEntry, keep time.Duration) error {
	if err := checkHistory(&e); err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	cutoff := historyKey(HistoryEntry{At: e.At - int64(keep/time.Second)})
	return s.db.update(func(tx kvTx) error {
		// Keys sort by time: the old ones come first, and the scan stops
		// at the first to keep.
		var old []string
		if err := tx.scan(bHistory, "", func(k string, _ []byte) error {
			if k >= cutoff {
				return errStopScan
			}
			old = append(old, k)
			return nil
		}); err != nil && !errors.Is(err, errStopScan) {
			return err
		}
		for _, k := range old {
			if err := tx.del(bHistory, k); err != nil {
				return err
			}
		}
		return tx.put(bHistory, historyKey(e), b)
	})
}

func (s *kvStore) History(_ context.Context, f HistoryFilter) ([]HistoryEntry, error) {
	var out []HistoryEntry
	err := s.db.view(func(tx kvTx) error {
		return tx.scan(bHistory, "", func(_ string, b []byte) error {
			var e HistoryEntry
			if json.Unmarshal(b, &e) == nil && f.matches(e) {
				out = append(out, e)
			}
			return nil
		})
	})
	sortHistory(out)
	return limitHistory(out, f.Limit), err
}

// sortHistory orders entries oldest first (then by id).
func sortHistory(es []HistoryEntry) {
	slices.SortFunc(es, func(a, b HistoryEntry) int { return strings.Compare(historyKey(a), historyKey(b)) })
}

// limitHistory keeps the newest limit entries (all with 0).
func limitHistory(es []HistoryEntry, limit int) []HistoryEntry {
	if limit > 0 && len(es) > limit {
		return es[len(es)-limit:]
	}
	return es
}

// keyHistory holds every entry, scored by its time (one key: one slot).
const keyHistory = "gh:history"

func (s *RedisStore) AppendHistory(ctx context.Context, e HistoryEntry, keep time.Duration) error {
	if err := checkHistory(&e); err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, keyHistory, "-inf", "("+strconv.FormatInt(e.At-int64(keep/time.Second), 10))
		p.ZAdd(ctx, keyHistory, redis.Z{Score: float64(e.At), Member: string(b)})
		return nil
	})
	return err
}

func (s *RedisStore) History(ctx context.Context, f HistoryFilter) ([]HistoryEntry, error) {
	ms, err := s.client.ZRangeByScore(ctx, keyHistory, &redis.ZRangeBy{Min: strconv.FormatInt(f.Since.Unix(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, err
	}
	var out []HistoryEntry
	for _, m := range ms {
		var e HistoryEntry
		if json.Unmarshal([]byte(m), &e) == nil && f.matches(e) {
			out = append(out, e)
		}
	}
	sortHistory(out)
	return limitHistory(out, f.Limit), nil
}

func (w *observed) AppendHistory(ctx context.Context, e HistoryEntry, keep time.Duration) error {
	start := time.Now()
	err := w.s.AppendHistory(ctx, e, keep)
	w.observe("append_history", start, err)
	return err
}

func (w *observed) History(ctx context.Context, f HistoryFilter) ([]HistoryEntry, error) {
	start := time.Now()
	v, err := w.s.History(ctx, f)
	w.observe("history", start, err)
	return v, err
}
