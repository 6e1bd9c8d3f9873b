package grants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// kv is the little a transactional key-value store must offer for the
// embedded stores: buckets of keys, read and update transactions, prefix
// scans in key order. bbolt and a map implement it.
type kv interface {
	view(func(tx kvTx) error) error
	update(func(tx kvTx) error) error
	close() error
}

// errStopScan ends a scan early; the scan returns it.
var errStopScan = errors.New("grants: scan stopped")

type kvTx interface {
	get(bucket, key string) []byte
	put(bucket, key string, v []byte) error
	del(bucket, key string) error
	scan(bucket, prefix string, fn func(key string, v []byte) error) error
}

// Buckets of the embedded stores.
const (
	bGrants     = "grants"       // id → Grant
	bUserGrants = "user_grants"  // userkey/id → ""
	bRequests   = "requests"     // id → Request
	bSessions   = "sessions"     // userkey/sid → until
	bUsers      = "users"        // userkey → revoked at
	bEmails     = "emails"       // email/userkey → User
	bRevGrants  = "revoked"      // grant id → GrantRevocation (the mirror's source)
	bIdPSess    = "idp_sessions" // IdPSession.Key → until
	bOnce       = "once"         // onceKey(id) → until
	bPending    = "pending"      // key → expiry and a sealed value (PutPending)
	bHistory    = "history"      // historyKey → HistoryEntry
	bUsage      = "usage"        // app, day, user key, via, resource → usageRecord (usage.go)
	// Access reviews (reviews.go).
	bReviews         = "reviews"              // campaign id → Campaign
	bReviewDecisions = "review_decisions"     // campaign id/item id → ItemDecision
	bResourceRevs    = "resource_revocations" // user key|app|resource → ResourceRevocation
)

var allBuckets = []string{bGrants, bUserGrants, bRequests, bSessions, bUsers, bEmails, bRevGrants, bIdPSess, bOnce, bPending, bHistory,
	bSCIM, bSCIMNames, bSCIMIndex, bUsage, bReviews, bReviewDecisions, bResourceRevs}

// kvStore is the Store of the embedded stores, on any kv.
type kvStore struct {
	db     kv
	memo   grantMemo // decoded grants for Lookup
	events *broadcaster
	stop   chan struct{}
	done   chan struct{}
}

// purgeEvery is how often expired entries are purged in the background.
const purgeEvery = 10 * time.Minute

func newKVStore(db kv) *kvStore {
	s := &kvStore{db: db, events: newLocalBroadcaster(), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(purgeEvery)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case now := <-t.C:
				_ = s.purge(now) // a purge that fails is retried at the next tick; nothing depends on it but disk space
			}
		}
	}()
	return s
}

func (s *kvStore) Lookup(_ context.Context, u User, sid string, now time.Time) (State, error) {
	var st State
	err := s.db.view(func(tx kvTx) error {
		uk := u.Key()
		if err := tx.scan(bUserGrants, uk+"/", func(k string, _ []byte) error {
			if g, err := s.memo.decode(tx.get(bGrants, k[len(uk)+1:])); err == nil {
				st.classify(g, now)
			}
			return nil
		}); err != nil {
			return err
		}
		st.UserRevokedAt = atoi(tx.get(bUsers, uk))
		if sid != "" {
			if until := atoi(tx.get(bSessions, uk+"/"+sid)); until > 0 {
				st.SessionRevoked = true
			}
		}
		return nil
	})
	return st, err
}

func (s *kvStore) AddGrant(_ context.Context, g Grant) (Grant, error) {
	if err := validateGrant(&g); err != nil {
		return g, err
	}
	err := s.db.update(func(tx kvTx) error { return putGrant(tx, g) })
	if err == nil {
		s.events.send(Event{Kind: "user", UserKey: g.User.Key()})
	}
	return g, err
}

// putGrant writes g, and forgets the user's grants past retention at
// the time of the write (the purge would, later).
func putGrant(tx kvTx, g Grant) error {
	if err := dropPastRetention(tx, g.User.Key(), g.CreatedAt); err != nil {
		return err
	}
	b, _ := json.Marshal(g)
	if err := tx.put(bGrants, g.ID, b); err != nil {
		return err
	}
	if err := tx.put(bUserGrants, g.User.Key()+"/"+g.ID, nil); err != nil {
		return err
	}
	return indexEmail(tx, g.Email, g.User)
}

// dropPastRetention deletes the user's grants past retention at now: a
// seek to the user's keys, not a scan of every grant.
func dropPastRetention(tx kvTx, uk string, now int64) error {
	var dead []Grant
	if err := tx.scan(bUserGrants, uk+"/", func(k string, _ []byte) error {
		var g Grant
		if json.Unmarshal(tx.get(bGrants, k[len(uk)+1:]), &g) == nil && g.keptUntil() < now {
			dead = append(dead, g)
		}
		return nil
	}); err != nil {
		return err
	}
	var errs []error
	for _, g := range dead {
		errs = append(errs, deleteGrant(tx, g))
	}
	return errors.Join(errs...)
}

// deleteGrant forgets a grant: its record, its user's index entry and its
// revocation.
func deleteGrant(tx kvTx, g Grant) error {
	return errors.Join(tx.del(bGrants, g.ID), tx.del(bUserGrants, g.User.Key()+"/"+g.ID), tx.del(bRevGrants, g.ID))
}

func indexEmail(tx kvTx, email string, u User) error {
	if email == "" {
		return nil
	}
	b, _ := json.Marshal(u)
	return tx.put(bEmails, strings.ToLower(email)+"/"+u.Key(), b)
}

func (s *kvStore) RevokeGrant(_ context.Context, id, by string, now time.Time) (Grant, error) {
	var g Grant
	err := s.db.update(func(tx kvTx) error {
		var err error
		g, err = revokeGrant(tx, id, GrantRevocation{At: now.Unix(), By: by})
		return err
	})
	if err == nil {
		s.events.send(Event{Kind: "grant_revoked", UserKey: g.User.Key(), GrantID: g.ID, At: g.ExpiresAt})
	}
	return g, err
}

// revokeGrant marks a grant revoked (if it is not already) and records
// the revocation for the mirrors.
func revokeGrant(tx kvTx, id string, rv GrantRevocation) (Grant, error) {
	var g Grant
	b := tx.get(bGrants, id)
	if b == nil {
		return g, ErrNotFound
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return g, err
	}
	if g.RevokedAt == 0 {
		g.RevokedAt, g.RevokedBy = rv.At, rv.By
		nb, _ := json.Marshal(g)
		if err := tx.put(bGrants, id, nb); err != nil {
			return g, err
		}
	}
	rb, _ := json.Marshal(GrantRevocation{UserKey: g.User.Key(), Until: g.ExpiresAt, At: g.RevokedAt, By: g.RevokedBy})
	return g, tx.put(bRevGrants, id, rb)
}

func (s *kvStore) Grants(_ context.Context, f GrantFilter) ([]Grant, error) {
	var out []Grant
	err := s.db.view(func(tx kvTx) error {
		return tx.scan(bGrants, "", func(_ string, b []byte) error {
			var g Grant
			if json.Unmarshal(b, &g) != nil {
				return nil
			}
			if matchGrant(&g, f) {
				out = append(out, g)
			}
			return nil
		})
	})
	sortGrants(out)
	return out, err
}

func matchGrant(g *Grant, f GrantFilter) bool {
	if f.User != nil && g.User != *f.User {
		return false
	}
	if f.Resource != "" && g.Resource != f.Resource {
		return false
	}
	return f.All || g.Active(f.Now)
}

func sortGrants(gs []Grant) {
	sort.Slice(gs, func(i, j int) bool {
		if gs[i].CreatedAt != gs[j].CreatedAt {
			return gs[i].CreatedAt < gs[j].CreatedAt
		}
		return gs[i].ID < gs[j].ID
	})
}

func (s *kvStore) CreateRequest(_ context.Context, r Request) (Request, error) {
	if err := validateRequest(&r); err != nil {
		return r, err
	}
	err := s.db.update(func(tx kvTx) error { return putRequest(tx, r) })
	if err == nil {
		s.events.send(Event{Kind: "user", UserKey: r.User.Key()})
	}
	return r, err
}

func putRequest(tx kvTx, r Request) error {
	b, _ := json.Marshal(r)
	if err := tx.put(bRequests, r.ID, b); err != nil {
		return err
	}
	return indexEmail(tx, r.Email, r.User)
}

func (s *kvStore) Request(_ context.Context, id string) (Request, error) {
	var r Request
	err := s.db.view(func(tx kvTx) error {
		b := tx.get(bRequests, id)
		if b == nil {
			return ErrNotFound
		}
		return json.Unmarshal(b, &r)
	})
	return r, err
}

func (s *kvStore) Requests(_ context.Context, f RequestFilter) ([]Request, error) {
	var out []Request
	err := s.db.view(func(tx kvTx) error {
		return tx.scan(bRequests, "", func(_ string, b []byte) error {
			var r Request
			if json.Unmarshal(b, &r) == nil && matchRequest(&r, f) {
				out = append(out, r)
			}
			return nil
		})
	})
	sortRequests(out)
	return out, err
}

func matchRequest(r *Request, f RequestFilter) bool {
	return (f.App == "" || r.App == f.App) && (f.Status == "" || r.Status == f.Status) && (f.User == nil || r.User == *f.User)
}

func sortRequests(rs []Request) {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].CreatedAt != rs[j].CreatedAt {
			return rs[i].CreatedAt < rs[j].CreatedAt
		}
		return rs[i].ID < rs[j].ID
	})
}

func (s *kvStore) Decide(_ context.Context, id string, d Decision) (Request, *Grant, error) {
	var r Request
	var g *Grant
	err := s.db.update(func(tx kvTx) error {
		b := tx.get(bRequests, id)
		if b == nil {
			return ErrNotFound
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		if r.Status != Pending {
			return ErrAlreadyDecided
		}
		g = decide(&r, d)
		nb, _ := json.Marshal(r)
		if err := tx.put(bRequests, id, nb); err != nil {
			return err
		}
		if g != nil {
			return putGrant(tx, *g)
		}
		return nil
	})
	if err != nil {
		return r, nil, err
	}
	s.events.send(Event{Kind: "user", UserKey: r.User.Key()})
	return r, g, nil
}

func (s *kvStore) RevokeSession(_ context.Context, u User, sid string, until time.Time) error {
	err := s.db.update(func(tx kvTx) error {
		return tx.put(bSessions, u.Key()+"/"+sid, []byte(strconv.FormatInt(until.Unix(), 10)))
	})
	if err == nil {
		s.events.send(Event{Kind: "session_revoked", UserKey: u.Key(), SessionID: sid, At: until.Unix()})
	}
	return err
}

func (s *kvStore) RevokeUser(_ context.Context, u User, at time.Time) error {
	err := s.db.update(func(tx kvTx) error {
		if prev := atoi(tx.get(bUsers, u.Key())); prev >= at.Unix() {
			return nil
		}
		return tx.put(bUsers, u.Key(), []byte(strconv.FormatInt(at.Unix(), 10)))
	})
	if err == nil {
		s.events.send(Event{Kind: "user_revoked", UserKey: u.Key(), At: at.Unix()})
	}
	return err
}

func (s *kvStore) RevokeIdPSession(_ context.Context, is IdPSession, until time.Time) error {
	if err := validIdPSession(is); err != nil {
		return err
	}
	k := is.Key()
	err := s.db.update(func(tx kvTx) error { return putLater(tx, bIdPSess, k, until.Unix()) })
	if err == nil {
		s.events.send(Event{Kind: "idp_session_revoked", SessionID: k, At: until.Unix()})
	}
	return err
}

// putLater sets key to the unix time t unless it holds a later one: a
// revocation is never shortened.
func putLater(tx kvTx, bucket, key string, t int64) error {
	if atoi(tx.get(bucket, key)) >= t {
		return nil
	}
	return tx.put(bucket, key, []byte(strconv.FormatInt(t, 10)))
}

func (s *kvStore) FirstUse(_ context.Context, id string, now, until time.Time) (bool, error) {
	if err := validateOnce(id, now, until); err != nil {
		return false, err
	}
	first := false
	err := s.db.update(func(tx kvTx) error {
		k := onceKey(id)
		if atoi(tx.get(bOnce, k)) > now.Unix() {
			return nil
		}
		first = true
		return tx.put(bOnce, k, []byte(strconv.FormatInt(until.Unix(), 10)))
	})
	return first && err == nil, err
}

func (s *kvStore) NoteEmail(_ context.Context, u User, email string) error {
	if email == "" || !u.valid() {
		return fmt.Errorf("%w: NoteEmail needs an email and a user", ErrInvalid)
	}
	return s.db.update(func(tx kvTx) error { return indexEmail(tx, email, u) })
}

func (s *kvStore) Users(_ context.Context, email string) ([]User, error) {
	var out []User
	err := s.db.view(func(tx kvTx) error {
		prefix := strings.ToLower(email) + "/"
		return tx.scan(bEmails, prefix, func(k string, b []byte) error {
			// Exactly email + "/" + a user key: "alice@example.com/x" is
			// another address, not alice's.
			if strings.Contains(k[len(prefix):], "/") {
				return nil
			}
			var u User
			if json.Unmarshal(b, &u) == nil {
				out = append(out, u)
			}
			return nil
		})
	})
	return out, err
}

func (s *kvStore) Revocations(_ context.Context, now time.Time) (Revocations, error) {
	rv := newRevocations()
	err := s.db.view(func(tx kvTx) error {
		if err := tx.scan(bSessions, "", func(k string, v []byte) error {
			if until := atoi(v); until > now.Unix() {
				rv.Sessions[k] = until
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tx.scan(bIdPSess, "", func(k string, v []byte) error {
			if until := atoi(v); until > now.Unix() {
				rv.IdPSessions[k] = until
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tx.scan(bRevGrants, "", func(k string, v []byte) error {
			var g GrantRevocation
			if json.Unmarshal(v, &g) == nil && g.Until > now.Unix() {
				rv.Grants[k] = g
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.scan(bUsers, "", func(k string, v []byte) error {
			rv.Users[k] = atoi(v)
			return nil
		})
	})
	return rv, err
}

// Restore writes back revocations the store lacks. An embedded store
// loses nothing it acknowledged, but a node may hold what another
// instance of the file never had (a restored backup).
func (s *kvStore) Restore(_ context.Context, rv Revocations) error {
	return s.db.update(func(tx kvTx) error {
		for k, until := range rv.Sessions {
			if atoi(tx.get(bSessions, k)) < until {
				if err := tx.put(bSessions, k, []byte(strconv.FormatInt(until, 10))); err != nil {
					return err
				}
			}
		}
		for uk, at := range rv.Users {
			if atoi(tx.get(bUsers, uk)) < at {
				if err := tx.put(bUsers, uk, []byte(strconv.FormatInt(at, 10))); err != nil {
					return err
				}
			}
		}
		for k, until := range rv.IdPSessions {
			if err := putLater(tx, bIdPSess, k, until); err != nil {
				return err
			}
		}
		for id, g := range rv.Grants {
			if _, err := revokeGrant(tx, id, g); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		return nil
	})
}

// purgeRule says what in a bucket is past its retention.
type purgeRule struct {
	bucket string
	past   func(key string, v []byte) bool
}

// purgeRules are what purge removes at now: grants past keptUntil,
// requests decided (or, still pending, made) longer ago than retention,
// user revocations older than retention (as Redis expires them), session
// and IdP-session revocations past their end, one-time ids past their
// record, expired pending values, and usage and reviews past theirs.
func purgeRules(now time.Time) []purgeRule {
	cutoff := now.Add(-retention).Unix()
	ended := func(_ string, v []byte) bool { return atoi(v) < now.Unix() }
	return []purgeRule{
		{bGrants, func(_ string, v []byte) bool {
			var g Grant
			return json.Unmarshal(v, &g) == nil && g.keptUntil() < now.Unix()
		}},
		{bRequests, func(_ string, v []byte) bool {
			var r Request
			return json.Unmarshal(v, &r) == nil && ((r.Status != Pending && r.DecidedAt < cutoff) || (r.Status == Pending && r.CreatedAt < cutoff))
		}},
		{bUsers, func(_ string, v []byte) bool { return atoi(v) < cutoff }},
		{bSessions, ended},
		{bIdPSess, ended},
		{bOnce, ended},
		{bPending, pendingPast(now)},
		{bUsage, usagePast(now)},
		{bReviews, reviewPast(now)},
	}
}

// purgeBatch is how many entries one of purge's write transactions
// removes.
const purgeBatch = 1000

// purge removes what purgeRules say is past. It finds it in read
// transactions, which wait for nothing and make nothing wait, and removes
// it in short write transactions that check each entry again (it may
// have been written anew meanwhile): with a million grants, a single
// transaction would hold up every write (a logout, a revocation) for
// seconds.
func (s *kvStore) purge(now time.Time) error {
	var errs []error
	for _, r := range purgeRules(now) {
		var past []string
		if err := s.db.view(func(tx kvTx) error {
			return tx.scan(r.bucket, "", func(k string, v []byte) error {
				if r.past(k, v) {
					past = append(past, k)
				}
				return nil
			})
		}); err != nil {
			errs = append(errs, err)
			continue
		}
		for batch := range slices.Chunk(past, purgeBatch) {
			errs = append(errs, s.db.update(func(tx kvTx) error {
				for _, k := range batch {
					if v := tx.get(r.bucket, k); v != nil && r.past(k, v) {
						if err := forget(tx, r.bucket, k, v); err != nil {
							return err
						}
					}
				}
				return nil
			}))
		}
	}
	return errors.Join(errs...)
}

// forget deletes an entry purge found past, with what hangs on it.
func forget(tx kvTx, bucket, k string, v []byte) error {
	switch bucket {
	case bGrants:
		var g Grant
		if err := json.Unmarshal(v, &g); err != nil {
			return err
		}
		return deleteGrant(tx, g)
	case bReviews:
		return deleteReview(tx, k)
	}
	return tx.del(bucket, k)
}

func (s *kvStore) Events() <-chan Event { return s.events.ch }

func (s *kvStore) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	<-s.done
	s.events.close()
	return s.db.close()
}

func atoi(b []byte) int64 {
	n, _ := strconv.ParseInt(string(b), 10, 64)
	return n
}
