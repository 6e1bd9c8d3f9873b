package authn

import (
	"errors"
	"path"
	"strings"
	"unicode/utf8"
)

// ErrAmbiguousPath is returned for request paths that upstreams may read
// differently from Gatehouse. Such requests are refused (400) rather than
// guessed at, because a guess that differs from the upstream's is how
// path-based rules get dodged.
var ErrAmbiguousPath = errors.New("authn: ambiguous request path")

// CanonicalPath turns an escaped request path into the one form every
// Gatehouse rule is matched against: percent-decoded once, with `//`, `/./`
// and `..` resolved, its case and trailing slash kept.
//
// It refuses (ErrAmbiguousPath) what legacy upstreams read differently from
// Caddy: `;` (path parameters in Tomcat, Jetty…), `\` (a separator on
// Windows and in some frameworks), an encoded `/`, a control character
// (C0, DEL or C1), bytes that are not valid UTF-8 once decoded (overlong
// forms such as `%c0%ae` are how `..` has been smuggled past filters), an
// invalid or double percent-encoding, and a segment ending in a dot or a
// space (Windows drops them). Encoded forms of each are refused too.
func CanonicalPath(escaped string) (string, error) {
	if escaped == "" {
		return "/", nil
	}
	decoded, err := decodePath(escaped)
	if err != nil {
		return "", err
	}
	cleaned := path.Clean(decoded)
	if strings.HasSuffix(decoded, "/") && cleaned != "/" {
		cleaned += "/"
	}
	return cleaned, nil
}

// CheckRequestTarget applies CanonicalPath's refusals to the request
// target exactly as the client sent it (origin-form `/p?q`, absolute-form
// `https://host/p?q`, or `*`), before any dot segment is resolved, so that
// a rewrite in front of Gatehouse cannot launder an ambiguous path such as
// `/public;/../admin`. Anything else (a CONNECT authority) is refused.
func CheckRequestTarget(target string) error {
	if target == "*" {
		return nil
	}
	if !strings.HasPrefix(target, "/") {
		// Absolute-form: skip the scheme and authority.
		scheme, rest, ok := strings.Cut(target, "://")
		if !ok || scheme == "" || strings.ContainsAny(scheme, "/?#") {
			return ErrAmbiguousPath
		}
		i := strings.IndexAny(rest, "/?")
		if i < 0 {
			return nil // no path at all: "/"
		}
		target = rest[i:]
		if target[0] == '?' {
			return nil
		}
	}
	if i := strings.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	_, err := decodePath(target)
	return err
}

// decodePath percent-decodes an escaped absolute path once, refusing
// anything ambiguous on the way; dot segments are left as they are.
func decodePath(escaped string) (string, error) {
	if escaped == "" || escaped[0] != '/' {
		return "", ErrAmbiguousPath
	}
	var b []byte
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		if c == '%' {
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				return "", ErrAmbiguousPath
			}
			d := unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			switch {
			case d == '/', d == '\\', d == ';', d < 0x20, d == 0x7f:
				return "", ErrAmbiguousPath
			}
			if b == nil {
				b = make([]byte, 0, len(escaped))
				b = append(b, escaped[:i]...)
			}
			b = append(b, d)
			i += 2
			continue
		}
		if c == ';' || c == '\\' || c < 0x20 || c == 0x7f {
			return "", ErrAmbiguousPath
		}
		if b != nil {
			b = append(b, c)
		}
	}
	decoded := escaped
	if b != nil {
		decoded = string(b)
		// "%25xx" decodes to "%xx": an upstream that decodes again would
		// see another path than the one the rules matched.
		for i := 0; i+2 < len(decoded); i++ {
			if decoded[i] == '%' && isHex(decoded[i+1]) && isHex(decoded[i+2]) {
				return "", ErrAmbiguousPath
			}
		}
	}
	if !validPathText(decoded) {
		return "", ErrAmbiguousPath
	}
	for seg := range strings.SplitSeq(decoded, "/") {
		if seg == "" || seg == "." || seg == ".." {
			continue
		}
		if last := seg[len(seg)-1]; last == '.' || last == ' ' {
			return "", ErrAmbiguousPath
		}
	}
	return decoded, nil
}

// validPathText reports whether a decoded path is valid UTF-8 (which
// excludes overlong encodings and surrogates) without C1 control
// characters. ASCII, the common case, is checked byte by byte.
func validPathText(s string) bool {
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || (r >= 0x80 && r <= 0x9f) {
			return false
		}
		i += size
	}
	return true
}

// IsInternalPath reports whether a canonical path is one of Gatehouse's own
// endpoints (under /.gatehouse/, any case). Such paths are never proxied.
func IsInternalPath(canonical string) bool {
	const prefix = "/.gatehouse"
	if len(canonical) < len(prefix) || !strings.EqualFold(canonical[:len(prefix)], prefix) {
		return false
	}
	return len(canonical) == len(prefix) || canonical[len(prefix)] == '/'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
