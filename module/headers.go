package module

import (
	"fmt"
	"net/http"
	"strings"
)

// managedHeaders are the request headers only Gatehouse may set: identity
// headers (and, later, policy and assertion headers). Whatever a client
// sends under these names is removed before anything else, comparing names
// case-insensitively and with '_' read as '-' (CGI, PHP and nginx with
// underscores_in_headers treat them alike).
type managedHeaders struct {
	names []string // normalized
}

func newManagedHeaders(names []string) managedHeaders {
	m := managedHeaders{}
	for _, n := range names {
		m.names = append(m.names, normalizeHeaderName(n))
	}
	return m
}

// normalizeHeaderName lowercases a header name and maps '_' to '-'.
func normalizeHeaderName(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c == '_':
			b[i] = '-'
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// is reports whether name is managed, without allocating.
func (m managedHeaders) is(name string) bool {
	for _, n := range m.names {
		if sameHeaderName(name, n) {
			return true
		}
	}
	return false
}

// sameHeaderName compares name with a normalized name.
func sameHeaderName(name, normalized string) bool {
	if len(name) != len(normalized) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != normalized[i] {
			return false
		}
	}
	return true
}

// strip removes every managed header from r, in any spelling, and the
// ways a client could make a proxy drop or add one later: a Connection
// header naming it (hop-by-hop removal would delete the value Gatehouse
// sets) and request trailers.
func (m managedHeaders) strip(r *http.Request) {
	if len(m.names) == 0 {
		return
	}
	for k := range r.Header {
		if m.is(k) {
			delete(r.Header, k)
		}
	}
	for k := range r.Trailer {
		if m.is(k) {
			delete(r.Trailer, k)
		}
	}
	m.stripTokens(r.Header, "Connection")
	m.stripTokens(r.Header, "Trailer")
}

// stripTokens removes managed names from a comma-separated header that
// lists header names.
func (m managedHeaders) stripTokens(h http.Header, key string) {
	vals, ok := h[key]
	if !ok {
		return
	}
	changed := false
	kept := vals[:0:0]
	for _, v := range vals {
		var keep []string
		for tok := range strings.SplitSeq(v, ",") {
			if m.is(strings.TrimSpace(tok)) {
				changed = true
				continue
			}
			keep = append(keep, tok)
		}
		if len(keep) > 0 {
			kept = append(kept, strings.Join(keep, ","))
		}
	}
	if !changed {
		return
	}
	if len(kept) == 0 {
		delete(h, key)
	} else {
		h[key] = kept
	}
}

// forbiddenManaged are headers Gatehouse refuses to manage: hop-by-hop,
// framing and routing headers whose meaning proxies and servers depend on.
var forbiddenManaged = map[string]bool{
	"host": true, "cookie": true, "set-cookie": true, "authorization": true,
	"connection": true, "keep-alive": true, "proxy-connection": true, "te": true,
	"trailer": true, "transfer-encoding": true, "upgrade": true, "content-length": true,
	"content-type": true, "content-encoding": true, "expect": true, "proxy-authorization": true,
	"proxy-authenticate": true, "x-forwarded-for": true, "x-forwarded-host": true,
	"x-forwarded-proto": true, "forwarded": true, "via": true,
}

// checkManagedHeaderName accepts a header name Gatehouse may set.
func checkManagedHeaderName(name string) error {
	if name == "" {
		return fmt.Errorf("header name is required")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%q is not a valid header name (letters, digits, '-' and '_' only)", name)
		}
	}
	n := normalizeHeaderName(name)
	if forbiddenManaged[n] || strings.HasPrefix(n, "sec-") || strings.HasPrefix(n, "proxy-") {
		return fmt.Errorf("%q cannot be an identity header: proxies and servers give it another meaning", name)
	}
	return nil
}

// identityHeader is a configured header, its name in canonical form.
type identityHeader struct {
	key   string
	claim string
}

// headerValue makes a claim value safe for a header: control characters
// are dropped (they would split or break the header).
func headerValue(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return strings.Map(func(r rune) rune {
				if r < ' ' || r == 0x7f {
					return -1
				}
				return r
			}, s)
		}
	}
	return s
}

// joinList joins list values with commas, escaping '%' and ',' inside a
// value so that the upstream can split the header unambiguously.
func joinList(vals []string) string {
	var b strings.Builder
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		if strings.ContainsAny(v, "%,") {
			v = strings.NewReplacer("%", "%25", ",", "%2C").Replace(v)
		}
		b.WriteString(v)
	}
	return b.String()
}

// stripOwnCookies removes Gatehouse's own cookies (the session, login
// and ID-token cookies) from the request before it goes upstream: the app
// needs none of them, and a session cookie in an app's logs would be a
// session for anyone who reads them. Other cookies are kept as sent.
func (h *Handler) stripOwnCookies(r *http.Request) {
	values := r.Header["Cookie"]
	for i, v := range values {
		if !strings.Contains(v, h.CookieName) {
			continue // the common case: nothing of ours, nothing to rebuild
		}
		kept := make([]string, 0, 4)
		for part := range strings.SplitSeq(v, ";") {
			// Other cookies pass as sent, less the separator's spaces
			// (trimming more, such as "\v", could turn a part the app's
			// parser ignores into a cookie it reads).
			part = strings.Trim(part, " \t")
			// Some servers trim the name more: " __Host-gatehouse =x" and
			// "\v__Host-gatehouse=x" are ours too.
			name, _, _ := strings.Cut(part, "=")
			if part != "" && !h.ownCookie(strings.TrimSpace(name)) {
				kept = append(kept, part)
			}
		}
		values[i] = strings.Join(kept, "; ")
	}
	// Drop values left empty, and the header when none is left.
	n := 0
	for _, v := range values {
		if v != "" {
			values[n] = v
			n++
		}
	}
	switch {
	case n == 0 && len(values) > 0:
		delete(r.Header, "Cookie")
	case n < len(values):
		r.Header["Cookie"] = values[:n]
	}
}

func (h *Handler) ownCookie(name string) bool {
	return name == h.sessionCookie || name == h.idTokenCookie || strings.HasPrefix(name, h.loginCookiePrefix)
}
