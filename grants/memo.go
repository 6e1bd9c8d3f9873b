package grants

import (
	"encoding/json"
	"sync"
)

// grantMemo remembers grants decoded from their stored JSON, keyed by the
// exact bytes. A grant's record changes rarely (approval, revocation) and
// is read at every cold lookup of its user, where decoding the JSON is
// most of the cost; equal bytes decode to equal grants, so the memo can
// never answer differently from json.Unmarshal. Grant holds only strings
// and numbers, so handing out copies shares nothing mutable.
type grantMemo struct {
	mu sync.Mutex
	m  map[string]Grant
}

// memoMax bounds the memo (about 600 bytes an entry); when full it
// starts again empty.
const memoMax = 8192

// decode is json.Unmarshal into a Grant, remembered. b may be reused by
// the caller after it returns (bbolt's are valid only in the transaction).
func (gm *grantMemo) decode(b []byte) (Grant, error) {
	gm.mu.Lock()
	g, ok := gm.m[string(b)] // no copy: the conversion is the map index
	gm.mu.Unlock()
	if ok {
		return g, nil
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return Grant{}, err
	}
	gm.remember(string(b), g)
	return g, nil
}

// decodeString is decode for a string, such as a Redis reply.
func (gm *grantMemo) decodeString(v string) (Grant, error) {
	gm.mu.Lock()
	g, ok := gm.m[v]
	gm.mu.Unlock()
	if ok {
		return g, nil
	}
	if err := json.Unmarshal([]byte(v), &g); err != nil {
		return Grant{}, err
	}
	gm.remember(v, g)
	return g, nil
}

func (gm *grantMemo) remember(key string, g Grant) {
	gm.mu.Lock()
	if gm.m == nil || len(gm.m) >= memoMax {
		gm.m = make(map[string]Grant, 64)
	}
	gm.m[key] = g
	gm.mu.Unlock()
}
