package authn

import (
	"net/url"
	"strings"
)

// maxReturnLen bounds the return URL carried through a login; longer ones
// fall back to "/" rather than bloating the login cookie.
const maxReturnLen = 2048

// SafeReturnPath returns raw when it is a path on this origin that is safe
// to send a browser to after login (or as an `rd` parameter), else "/".
//
// Only an origin-relative path with an optional query is accepted: no
// scheme, host or userinfo; no `//` or `/\` start in any decoding of it
// (browsers read those as another host); no backslash, whitespace, control
// or non-ASCII byte; and never one of Gatehouse's own endpoints, so a
// crafted return URL cannot log a user out or replay a callback.
func SafeReturnPath(raw string) string {
	if raw == "" || len(raw) > maxReturnLen || raw[0] != '/' {
		return "/"
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return "/"
		}
	}
	// Browsers and upstream redirectors may decode more than once: no
	// decoding of the value may look like a scheme-relative URL.
	s := raw
	for range 4 {
		if len(s) > 1 && (s[1] == '/' || s[1] == '\\') {
			return "/"
		}
		if hasControlOrBackslash(s) {
			return "/"
		}
		d, err := url.PathUnescape(s)
		if err != nil {
			return "/"
		}
		if d == s {
			break
		}
		s = d
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "/"
	}
	canon, err := CanonicalPath(u.EscapedPath())
	if err != nil || (IsInternalPath(canon) && !returnablePages[strings.ToLower(canon)]) {
		return "/"
	}
	return raw
}

// returnablePages are Gatehouse's own pages a login may return to: they
// only show things. Every other internal endpoint (logout, callback, …)
// is refused, so a crafted return URL cannot act for the user.
var returnablePages = map[string]bool{
	"/.gatehouse/access":    true,
	"/.gatehouse/approvals": true,
	"/.gatehouse/reviews":   true,
	// The form kept while its user signed in again: shown, sent only by
	// the user's click.
	"/.gatehouse/resubmit": true,
}

func hasControlOrBackslash(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f || c == '\\' {
			return true
		}
	}
	return false
}
