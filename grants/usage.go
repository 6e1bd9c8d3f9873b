package grants

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Usage records what users use: for each app, user and resource, how
// many allowed requests there were on one day (UTC) and when the last one
// was. Nodes add up their requests in memory and write them every few
// seconds (AddUsage); access reviews read them for a period (Usage).

// How a user had access to what they used.
const (
	// ViaStanding: their groups (standing access), no grant.
	ViaStanding = "standing"
	// ViaGrant: an active just-in-time grant for the resource.
	ViaGrant = "grant"
)

// UsageRetention is how long usage is kept: a yearly review still sees a
// whole year.
const UsageRetention = 400 * 24 * time.Hour

// maxUsageName bounds an app or resource name in usage records (a
// resource may come from the first segment of a path a client chose).
const maxUsageName = 128

// Usage is how often one user used one resource of one app: the count
// of allowed requests and the time of the last one. A record written is
// one day's (the day of Last, UTC); a record read is the sum over the
// days asked for.
type Usage struct {
	App      string `json:"app"`
	User     User   `json:"user"`
	Email    string `json:"email,omitempty"`
	Resource string `json:"resource"`
	// Via is ViaStanding or ViaGrant.
	Via   string `json:"via"`
	Count int64  `json:"count"`
	Last  int64  `json:"last"` // unix seconds
}

// UsageStore keeps usage records. AddUsage merges records into what the
// store holds (counts add up, the last use is the later one); Usage
// returns an app's records of the days from..to overlaps, one per user,
// resource and way of access, summed over those days.
type UsageStore interface {
	AddUsage(ctx context.Context, us []Usage) error
	Usage(ctx context.Context, app string, from, to time.Time) ([]Usage, error)
}

// usageDay is the day a use counts in: YYYYMMDD, UTC.
func usageDay(unix int64) string { return time.Unix(unix, 0).UTC().Format("20060102") }

// usageDays lists the days from..to overlaps (to excluded), in order.
func usageDays(from, to time.Time) []string {
	var out []string
	if !to.After(from) {
		return nil
	}
	// Nothing older than the retention is kept.
	if oldest := to.Add(-UsageRetention - 24*time.Hour); from.Before(oldest) {
		from = oldest
	}
	end := usageDay(to.Add(-time.Second).Unix())
	for d := from.UTC().Truncate(24 * time.Hour); ; d = d.Add(24 * time.Hour) {
		day := d.Format("20060102")
		out = append(out, day)
		if day >= end {
			return out
		}
	}
}

// UsageName reports whether s can name an app or a resource in usage
// records (and store keys): 1 to 128 bytes, no control character, no
// brace, no '|'.
func UsageName(s string) bool {
	if s == "" || len(s) > maxUsageName {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == '{' || c == '}' || c == '|' {
			return false
		}
	}
	return true
}

func validateUsage(us []Usage) error {
	for i := range us {
		u := &us[i]
		switch {
		case !UsageName(u.App) || !UsageName(u.Resource):
			return fmt.Errorf("%w: usage needs an app and a resource of 1 to %d printable bytes without {, } or |", ErrInvalid, maxUsageName)
		case !u.User.valid():
			return fmt.Errorf("%w: usage needs a user (iss and sub)", ErrInvalid)
		case u.Via != ViaStanding && u.Via != ViaGrant:
			return fmt.Errorf("%w: usage is via %q or %q, not %q", ErrInvalid, ViaStanding, ViaGrant, u.Via)
		case u.Count <= 0 || u.Last <= 0:
			return fmt.Errorf("%w: usage needs a positive count and a time", ErrInvalid)
		}
	}
	return nil
}

// usageMember identifies a record within an app: the user, the way of
// access and the resource (last: it is the one that may hold anything).
func usageMember(u *Usage) string { return u.User.Key() + "|" + u.Via + "|" + u.Resource }

// mergeUsage adds b into a (same app, user, resource and way).
func mergeUsage(a *Usage, b Usage) {
	a.Count += b.Count
	a.Last = max(a.Last, b.Last)
	if b.Email != "" {
		a.Email = b.Email
	}
}

// sortUsage orders records by user, resource, then way of access.
func sortUsage(us []Usage) {
	sort.Slice(us, func(i, j int) bool {
		a, b := &us[i], &us[j]
		if a.User != b.User {
			return a.User.Sub+"\x00"+a.User.Iss < b.User.Sub+"\x00"+b.User.Iss
		}
		if a.Resource != b.Resource {
			return a.Resource < b.Resource
		}
		return a.Via < b.Via
	})
}

// usageSum sums records by user, resource and way of access.
type usageSum map[string]*Usage

func (s usageSum) add(u Usage) {
	k := usageMember(&u)
	if cur := s[k]; cur != nil {
		mergeUsage(cur, u)
		return
	}
	s[k] = &u
}

func (s usageSum) list() []Usage {
	out := make([]Usage, 0, len(s))
	for _, u := range s {
		out = append(out, *u)
	}
	sortUsage(out)
	return out
}

// The embedded stores keep a record per app, day, user, way and
// resource in the usage bucket.

// usageRecord is a usage record as the embedded stores keep it.
type usageRecord struct {
	User  User   `json:"user"`
	Email string `json:"email,omitempty"`
	Count int64  `json:"n"`
	Last  int64  `json:"t"`
}

func kvUsageKey(u *Usage) string {
	return u.App + "\x00" + usageDay(u.Last) + "\x00" + u.User.Key() + "\x00" + u.Via + "\x00" + u.Resource
}

func (s *kvStore) AddUsage(_ context.Context, us []Usage) error {
	if err := validateUsage(us); err != nil {
		return err
	}
	if len(us) == 0 {
		return nil
	}
	return s.db.update(func(tx kvTx) error {
		for i := range us {
			u := &us[i]
			k := kvUsageKey(u)
			var r usageRecord
			if b := tx.get(bUsage, k); b != nil {
				_ = json.Unmarshal(b, &r) // a record that cannot be read is replaced
			}
			r.User, r.Count, r.Last = u.User, r.Count+u.Count, max(r.Last, u.Last)
			if u.Email != "" {
				r.Email = u.Email
			}
			b, _ := json.Marshal(r)
			if err := tx.put(bUsage, k, b); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *kvStore) Usage(_ context.Context, app string, from, to time.Time) ([]Usage, error) {
	days := usageDays(from, to)
	if len(days) == 0 || !UsageName(app) {
		return []Usage{}, nil
	}
	sum := usageSum{}
	err := s.db.view(func(tx kvTx) error {
		return tx.scan(bUsage, app+"\x00", func(k string, b []byte) error {
			parts := strings.SplitN(k, "\x00", 5)
			if len(parts) != 5 || parts[1] < days[0] || parts[1] > days[len(days)-1] {
				return nil
			}
			var r usageRecord
			if json.Unmarshal(b, &r) != nil {
				return nil
			}
			sum.add(Usage{App: app, User: r.User, Email: r.Email, Via: parts[3], Resource: parts[4], Count: r.Count, Last: r.Last})
			return nil
		})
	})
	return sum.list(), err
}

// usagePast reports whether a usage key is of a day past UsageRetention
// at now.
func usagePast(now time.Time) func(string, []byte) bool {
	cutoff := usageDay(now.Add(-UsageRetention).Unix())
	return func(k string, _ []byte) bool {
		parts := strings.SplitN(k, "\x00", 3)
		return len(parts) < 3 || parts[1] < cutoff
	}
}

// Redis keeps, per app and day, two sorted sets whose members are
// "<user key>|<via>|<resource>": the counts (ZINCRBY) and the last uses
// (ZADD GT: only ever later), and per app a hash of the users seen
// (user key → User and email). Every key of an app shares its hash tag,
// so one app's usage lives in one Cluster slot.
//
//	gh:usage:{<app>}:<day>:n   zset  member → count
//	gh:usage:{<app>}:<day>:t   zset  member → last use (unix)
//	gh:usage:{<app>}:users     hash  user key → usageRecord (user and email)
func kUsageCounts(app, day string) string { return "gh:usage:{" + app + "}:" + day + ":n" }
func kUsageLast(app, day string) string   { return "gh:usage:{" + app + "}:" + day + ":t" }
func kUsageUsers(app string) string       { return "gh:usage:{" + app + "}:users" }

func (s *RedisStore) AddUsage(ctx context.Context, us []Usage) error {
	if err := validateUsage(us); err != nil {
		return err
	}
	if len(us) == 0 {
		return nil
	}
	// The users first: a reader skips counts whose user it does not know.
	// A record with an email replaces the user's; one without only
	// fills a gap (HSETNX).
	p := s.client.Pipeline()
	apps := map[string]bool{}
	for i := range us {
		u := &us[i]
		b, _ := json.Marshal(usageRecord{User: u.User, Email: u.Email})
		if u.Email != "" {
			p.HSet(ctx, kUsageUsers(u.App), u.User.Key(), b)
		} else {
			p.HSetNX(ctx, kUsageUsers(u.App), u.User.Key(), b)
		}
		apps[u.App] = true
	}
	for app := range apps {
		p.Expire(ctx, kUsageUsers(app), UsageRetention)
	}
	expire := map[string]time.Time{}
	for i := range us {
		u := &us[i]
		day := usageDay(u.Last)
		m := usageMember(u)
		p.ZIncrBy(ctx, kUsageCounts(u.App, day), float64(u.Count), m)
		p.ZAddGT(ctx, kUsageLast(u.App, day), redis.Z{Score: float64(u.Last), Member: m})
		end := time.Unix(u.Last, 0).UTC().Truncate(24 * time.Hour).Add(UsageRetention)
		expire[kUsageCounts(u.App, day)], expire[kUsageLast(u.App, day)] = end, end
	}
	for k, at := range expire {
		p.ExpireAt(ctx, k, at)
	}
	if _, err := p.Exec(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

func (s *RedisStore) Usage(ctx context.Context, app string, from, to time.Time) ([]Usage, error) {
	days := usageDays(from, to)
	if len(days) == 0 || !UsageName(app) {
		return []Usage{}, nil
	}
	p := s.client.Pipeline()
	counts := make([]*redis.ZSliceCmd, len(days))
	lasts := make([]*redis.ZSliceCmd, len(days))
	for i, day := range days {
		counts[i] = p.ZRangeWithScores(ctx, kUsageCounts(app, day), 0, -1)
		lasts[i] = p.ZRangeWithScores(ctx, kUsageLast(app, day), 0, -1)
	}
	users := p.HGetAll(ctx, kUsageUsers(app))
	if _, err := p.Exec(ctx); err != nil && err != redis.Nil {
		return nil, unavailable(err)
	}
	known := map[string]usageRecord{}
	for uk, v := range users.Val() {
		var r usageRecord
		if json.Unmarshal([]byte(v), &r) == nil {
			known[uk] = r
		}
	}
	sum := usageSum{}
	for i := range days {
		last := map[string]int64{}
		for _, z := range lasts[i].Val() {
			m, _ := z.Member.(string)
			last[m] = int64(z.Score)
		}
		for _, z := range counts[i].Val() {
			m, _ := z.Member.(string)
			parts := strings.SplitN(m, "|", 3)
			r, ok := known[parts[0]]
			if len(parts) != 3 || !ok {
				continue // a user record written after its counts, or expired: skip
			}
			sum.add(Usage{App: app, User: r.User, Email: r.Email, Via: parts[1], Resource: parts[2], Count: int64(z.Score), Last: last[m]})
		}
	}
	return sum.list(), nil
}

// String describes a record for people (tests, logs).
func (u Usage) String() string {
	return u.App + "/" + u.Resource + " " + u.User.Sub + " via " + u.Via + ": " + strconv.FormatInt(u.Count, 10) + "×, last " + usageDay(u.Last)
}
