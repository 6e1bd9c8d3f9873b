package module

import (
	"fmt"
	"net/http"
	"strings"
)

// managedHeaders are the request headers no client may send upstream:
// Gatehouse's own (identity, policy and assertion headers, which it then
// sets itself) and the identity headers of other proxies and platforms
// that legacy apps trust (foreign; see defaultForeignHeaders). Whatever a
// client sends under these names is removed before anything else,
// comparing names case-insensitively and with '_' read as '-' (CGI, PHP
// and nginx with underscores_in_headers treat them alike). keep_headers
// exempts foreign names, never Gatehouse's own.
type managedHeaders struct {
	own     headerSet
	foreign headerSet
	keep    headerSet
}

// defaultForeignHeaders are the identity headers of other gateways and
// platforms (oauth2-proxy, Authelia, Apache and nginx auth modules,
// Grafana's auth proxy, Google IAP, Azure App Service, AWS ALB, Cloudflare
// Access, Pomerium, Vouch, authentik, Tailscale, mod_auth_openidc), which
// an app behind Gatehouse may trust although Gatehouse never sets them. A
// trailing '*' matches any name with that prefix.
var defaultForeignHeaders = []string{
	"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Preferred-Username",
	"X-Forwarded-Access-Token", "X-Auth-Request-*",
	"Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name",
	"X-Remote-*", "X-WEBAUTH-*", "X-Authenticated-*",
	"X-Goog-Authenticated-User-*", "X-Goog-Iap-Jwt-Assertion",
	"X-Ms-Client-Principal*", "X-Ms-Token-*", "X-Amzn-Oidc-*",
	"Cf-Access-*", "X-Pomerium-*", "X-Vouch-*", "X-Authentik-*", "Tailscale-User-*",
	"Oidc-Claim-*", "Oidc-Access-Token", "X-Gatehouse-*",
}

func newManagedHeaders(own, foreign, keep []string) managedHeaders {
	var m managedHeaders
	for _, n := range own {
		m.own.add(n)
	}
	for _, n := range foreign {
		m.foreign.add(n)
	}
	for _, n := range keep {
		m.keep.add(n)
	}
	return m
}

// headerSet matches header names against exact names and prefixes
// ("X-Remote-*"), in any case and with '_' read as '-', without
// allocating. Most request headers are ruled out by their first byte.
type headerSet struct {
	exact  []string // normalized
	prefix []string // normalized, without the '*'
	first  [256]bool
}

func (s *headerSet) add(pattern string) {
	n := normalizeHeaderName(pattern)
	if p, ok := strings.CutSuffix(n, "*"); ok {
		s.prefix = append(s.prefix, p)
		if p == "" {
			s.first = [256]bool{}
			for i := range s.first {
				s.first[i] = true
			}
			return
		}
		n = p
	} else {
		s.exact = append(s.exact, n)
	}
	s.first[n[0]] = true
	if 'a' <= n[0] && n[0] <= 'z' {
		s.first[n[0]-'a'+'A'] = true
	}
	if n[0] == '-' {
		s.first['_'] = true
	}
}

func (s *headerSet) has(name string) bool {
	if name == "" || !s.first[name[0]] {
		return false
	}
	for _, n := range s.exact {
		if sameHeaderName(name, n) {
			return true
		}
	}
	for _, p := range s.prefix {
		if len(name) >= len(p) && sameHeaderName(name[:len(p)], p) {
			return true
		}
	}
	return false
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
func (m *managedHeaders) is(name string) bool {
	return m.own.has(name) || (m.foreign.has(name) && !m.keep.has(name))
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
func (m *managedHeaders) strip(r *http.Request) {
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
func (m *managedHeaders) stripTokens(h http.Header, key string) {
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

// checkHeaderPattern accepts a strip_headers or keep_headers entry: a
// header name, or a prefix ending in '*' that covers no header proxies and
// servers depend on (X-Forwarded-* would take X-Forwarded-For with it).
func checkHeaderPattern(pattern string) error {
	prefix, wild := strings.CutSuffix(pattern, "*")
	if !wild {
		return checkManagedHeaderName(pattern)
	}
	if len(prefix) < 2 {
		return fmt.Errorf("%q is too wide: give a prefix of at least two characters, such as X-Acme-*", pattern)
	}
	if err := checkManagedHeaderName(prefix); err != nil {
		return err
	}
	p := normalizeHeaderName(prefix)
	for name := range forbiddenManaged {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("%q would cover %s, which proxies and servers give another meaning", pattern, name)
		}
	}
	if strings.HasPrefix("sec-", p) || strings.HasPrefix("proxy-", p) {
		return fmt.Errorf("%q would cover Sec-* or Proxy-* headers", pattern)
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
