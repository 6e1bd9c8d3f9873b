package gate

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// managedHeaders are the request headers no client may send upstream:
// Gatehouse's own (identity, policy and assertion headers, which it then
// sets itself) and the identity headers of other proxies and platforms
// that legacy apps trust (foreign; see DefaultForeignHeaders). Whatever a
// client sends under these names is removed before anything else,
// comparing names case-insensitively and with '_' read as '-' (CGI, PHP
// and nginx with underscores_in_headers treat them alike). keep_headers
// exempts foreign names, never Gatehouse's own.
type managedHeaders struct {
	own     headerSet
	foreign headerSet
	keep    headerSet
}

// DefaultForeignHeaders are the identity headers of other gateways and
// platforms (oauth2-proxy, Authelia, Apache and nginx auth modules,
// Grafana's auth proxy, Google IAP, Azure App Service, AWS ALB, Cloudflare
// Access, Pomerium, Vouch, authentik, Tailscale, mod_auth_openidc), which
// an app behind Gatehouse may trust although Gatehouse never sets them. A
// trailing '*' matches any name with that prefix.
var DefaultForeignHeaders = []string{
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
	n := NormalizeHeaderName(pattern)
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

// NormalizeHeaderName lowercases a header name and maps '_' to '-'.
func NormalizeHeaderName(s string) string {
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

// CheckHeaderName accepts a header name Gatehouse may set.
func CheckHeaderName(name string) error {
	if name == "" {
		return fmt.Errorf("header name is required")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%q is not a valid header name (letters, digits, '-' and '_' only)", name)
		}
	}
	n := NormalizeHeaderName(name)
	if forbiddenManaged[n] || strings.HasPrefix(n, "sec-") || strings.HasPrefix(n, "proxy-") {
		return fmt.Errorf("%q cannot be an identity header: proxies and servers give it another meaning", name)
	}
	return nil
}

// CheckHeaderPattern accepts a strip_headers or keep_headers entry: a
// header name, or a prefix ending in '*' that covers no header proxies and
// servers depend on (X-Forwarded-* would take X-Forwarded-For with it).
func CheckHeaderPattern(pattern string) error {
	prefix, wild := strings.CutSuffix(pattern, "*")
	if !wild {
		return CheckHeaderName(pattern)
	}
	if len(prefix) < 2 {
		return fmt.Errorf("%q is too wide: give a prefix of at least two characters, such as X-Acme-*", pattern)
	}
	for i := 0; i < len(prefix); i++ {
		if c := prefix[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%q is not a header name prefix (letters, digits, '-' and '_', then '*')", pattern)
		}
	}
	p := NormalizeHeaderName(prefix)
	var covered []string
	for name := range forbiddenManaged {
		if strings.HasPrefix(name, p) {
			covered = append(covered, http.CanonicalHeaderKey(name))
		}
	}
	if len(covered) > 0 {
		sort.Strings(covered)
		return fmt.Errorf("%q would cover %s, which proxies and servers give another meaning", pattern, strings.Join(covered, ", "))
	}
	for _, reserved := range []string{"sec-", "proxy-"} {
		if strings.HasPrefix(p, reserved) || strings.HasPrefix(reserved, p) {
			return fmt.Errorf("%q would cover Sec-* or Proxy-* headers, which proxies and servers give another meaning", pattern)
		}
	}
	return nil
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
