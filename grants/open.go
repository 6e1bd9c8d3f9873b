package grants

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// StoreURL is a parsed grants URL: what kind of store, and where.
type StoreURL struct {
	Kind string // "memory", "file" or "redis"
	Path string // the file of a "file" store, absolute
	Raw  string
}

// ParseURL reads a grants URL without opening anything, so that a
// configuration can be checked (and refused, with the reason) before it
// is used:
//
//	""                        in memory (one node, lost on restart)
//	memory:                   the same, said explicitly
//	file:///var/lib/gh/g.db   embedded bbolt file (one node, kept)
//	redis://… rediss://… redis+cluster://… rediss+cluster://…   Redis (shared by nodes; Sentinel with ?master_name=)
func ParseURL(rawURL string) (StoreURL, error) {
	if rawURL == "" || rawURL == "memory:" {
		return StoreURL{Kind: "memory", Raw: rawURL}, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return StoreURL{}, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
	}
	switch u.Scheme {
	case "file":
		p := u.Path
		if u.Host != "" && u.Host != "localhost" {
			p = u.Host + p // file://relative/path
		}
		if p == "" {
			return StoreURL{}, fmt.Errorf("%w: %q has no path", ErrUnsupportedURL, rawURL)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return StoreURL{}, err
		}
		return StoreURL{Kind: "file", Path: abs, Raw: rawURL}, nil
	case "redis+cluster", "rediss+cluster":
		if _, err := redis.ParseClusterURL(strings.Replace(rawURL, "+cluster", "", 1)); err != nil {
			return StoreURL{}, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
		}
		return StoreURL{Kind: "redis", Raw: rawURL}, nil
	case "redis", "rediss":
		var err error
		if u.Query().Get("master_name") != "" {
			_, err = redis.ParseFailoverURL(rawURL)
		} else {
			_, err = redis.ParseURL(rawURL)
		}
		if err != nil {
			return StoreURL{}, fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
		}
		return StoreURL{Kind: "redis", Raw: rawURL}, nil
	}
	return StoreURL{}, fmt.Errorf("%w: %q (want file://, redis://, rediss://, redis+cluster:// or memory:)", ErrUnsupportedURL, rawURL)
}

// Open opens the store a URL names (see ParseURL).
func Open(rawURL string, timeout time.Duration) (Store, error) {
	su, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	switch su.Kind {
	case "file":
		return OpenBolt(su.Path)
	case "redis":
		return OpenRedis(rawURL, RedisOptions{Timeout: timeout})
	}
	return NewMemory(), nil
}
