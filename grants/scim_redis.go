package grants

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// SCIM users in Redis. Every command names one key (so one Cluster
// slot); values a provisioning system chose appear in keys only hashed.
//
//	gh:scim:u:{<id>}          string  SCIMUser JSON
//	gh:scim:ids               set     index: every id
//	gh:scim:ix:<kind>:<hash>  set     index: ids of users found by a term (userName, externalId, link email)
//	gh:scim:name:<hash>       string  the id of the user that claimed a userName (SET NX)
//
// A record is written (with its index entries) before it claims its
// userName, so whoever finds a userName claimed also finds the
// claimant's record, and of two users created at once with one userName
// exactly one keeps it. A claim whose holder is gone, was renamed or was
// deleted is taken over; two writers taking over the same stale claim at
// the same moment could both succeed (there is no compare-and-set
// without MULTI or scripts, which Gatehouse does not use).
const keySCIMIDs = "gh:scim:ids"

func kSCIMUser(id string) string { return "gh:scim:u:{" + id + "}" }
func kSCIMName(name string) string {
	return "gh:scim:name:" + scimHash(name)
}
func kSCIMTerm(t scimTerm) string { return "gh:scim:ix:" + string(t.kind) + ":" + scimHash(t.value) }

func scimHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:16])
}

func (s *RedisStore) SCIMUser(ctx context.Context, id string) (SCIMUser, error) {
	var u SCIMUser
	b, err := s.client.Get(ctx, kSCIMUser(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, unavailable(err)
	}
	return u, json.Unmarshal(b, &u)
}

func (s *RedisStore) SCIMUsers(ctx context.Context, f SCIMFilter) ([]SCIMUser, error) {
	index := keySCIMIDs
	if t, ok := filterTerm(f); ok {
		index = kSCIMTerm(t)
	}
	ids, err := s.client.SMembers(ctx, index).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Get(ctx, kSCIMUser(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable(err)
	}
	var out []SCIMUser
	for _, c := range cmds {
		var u SCIMUser
		// An index entry whose record is gone, or that no longer
		// matches (renamed), is passed over.
		if b, err := c.Bytes(); err == nil && json.Unmarshal(b, &u) == nil && u.matches(f) {
			out = append(out, u)
		}
	}
	sortSCIMUsers(out)
	return out, nil
}

func (s *RedisStore) PutSCIMUser(ctx context.Context, u SCIMUser, now time.Time) (SCIMUser, error) {
	if err := CheckSCIMUser(&u); err != nil {
		return u, err
	}
	u.Deleted = 0
	var prev *SCIMUser
	if u.ID == "" {
		u.ID = newID()
	} else {
		p, err := s.SCIMUser(ctx, u.ID)
		if err != nil {
			return u, err
		}
		if p.Deleted != 0 {
			return u, ErrNotFound
		}
		prev = &p
	}
	u.stamp(prev, now)
	written := s.writeSCIM(ctx, &u)
	if !applied(written) {
		return u, written
	}
	if err := s.claimSCIMName(ctx, &u); err != nil {
		// The record goes back to what it was.
		var undo error
		if prev != nil {
			undo = errors.Join(s.unindexSCIM(ctx, &u, prev), s.writeSCIM(ctx, prev))
		} else {
			undo = s.dropSCIM(ctx, &u)
		}
		if !applied(undo) {
			return u, fmt.Errorf("%w (and undoing the write failed: %v)", unavailable(undo), err)
		}
		return u, err
	}
	if prev != nil {
		// Index entries left behind are passed over by readers.
		if err := s.unindexSCIM(ctx, prev, &u); err != nil {
			return u, err
		}
	}
	return u, written // nil, or ErrNotDurable
}

func (s *RedisStore) DeleteSCIMUser(ctx context.Context, id string, now time.Time) (SCIMUser, error) {
	p, err := s.SCIMUser(ctx, id)
	if err != nil {
		return p, err
	}
	if p.Deleted != 0 {
		return p, ErrNotFound
	}
	u := p
	u.stamp(&p, now)
	u.Active, u.Deleted = false, now.Unix()
	return u, s.writeSCIM(ctx, &u)
}

// writeSCIM writes u's index entries, then its record, durably: a user
// made inactive or deleted is a de-provisioning, reported done only once
// the replicas have it (ErrNotDurable: written, not confirmed).
func (s *RedisStore) writeSCIM(ctx context.Context, u *SCIMUser) error {
	idx := s.client.Pipeline()
	idx.SAdd(ctx, keySCIMIDs, u.ID)
	for _, t := range scimTerms(u) {
		idx.SAdd(ctx, kSCIMTerm(t), u.ID)
	}
	if _, err := idx.Exec(ctx); err != nil {
		return unavailable(err)
	}
	b, _ := json.Marshal(u)
	return s.durable(ctx, kSCIMUser(u.ID), func(p redis.Pipeliner) { p.Set(ctx, kSCIMUser(u.ID), b, 0) })
}

// unindexSCIM removes the index entries of old that u no longer has.
func (s *RedisStore) unindexSCIM(ctx context.Context, old, u *SCIMUser) error {
	keep := map[scimTerm]bool{}
	for _, t := range scimTerms(u) {
		keep[t] = true
	}
	p := s.client.Pipeline()
	n := 0
	for _, t := range scimTerms(old) {
		if !keep[t] {
			p.SRem(ctx, kSCIMTerm(t), old.ID)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	_, err := p.Exec(ctx)
	return unavailable(err)
}

// dropSCIM removes a user's record and index entries (not its userName
// claim: a claim whose holder is gone is taken over).
func (s *RedisStore) dropSCIM(ctx context.Context, u *SCIMUser) error {
	p := s.client.Pipeline()
	for _, t := range scimTerms(u) {
		p.SRem(ctx, kSCIMTerm(t), u.ID)
	}
	p.SRem(ctx, keySCIMIDs, u.ID)
	p.Del(ctx, kSCIMUser(u.ID))
	_, err := p.Exec(ctx)
	return unavailable(err)
}

// claimSCIMName gives u's userName to u: ErrConflict if another user,
// not deleted, holds it; a deleted user holding it is dropped.
func (s *RedisStore) claimSCIMName(ctx context.Context, u *SCIMUser) error {
	k := kSCIMName(nameKey(u.UserName))
	for range 3 {
		err := s.client.SetArgs(ctx, k, u.ID, redis.SetArgs{Mode: "NX"}).Err()
		if err == nil {
			return nil
		}
		if !errors.Is(err, redis.Nil) {
			return unavailable(err)
		}
		holder, err := s.client.Get(ctx, k).Result()
		if errors.Is(err, redis.Nil) {
			continue // released meanwhile: claim it again
		}
		if err != nil {
			return unavailable(err)
		}
		if holder == u.ID {
			return nil
		}
		h, err := s.SCIMUser(ctx, holder)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		case h.Deleted == 0 && nameKey(h.UserName) == nameKey(u.UserName):
			return fmt.Errorf("%w: another user has the userName %q", ErrConflict, u.UserName)
		}
		if err := s.client.Set(ctx, k, u.ID, 0).Err(); err != nil {
			return unavailable(err)
		}
		if h.Deleted != 0 {
			return s.dropSCIM(ctx, &h)
		}
		return nil
	}
	return fmt.Errorf("%w: the userName %q is being claimed by another writer", ErrConflict, u.UserName)
}
