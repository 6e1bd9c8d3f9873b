package authn

import (
	"errors"
	"path"
	"strings"
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
// Windows and in some frameworks), an encoded `/`, a control character, an
// invalid or double percent-encoding, and a segment ending in a dot or a
// space (Windows drops them). Encoded forms of each are refused too.
func CanonicalPath(escaped string) (string, error) {
	if escaped == "" {
		return "/", nil
	}
	if escaped[0] != '/' {
		return "", ErrAmbiguousPath
	}
	// Decode once, refusing anything ambiguous on the way.
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
	for seg := range strings.SplitSeq(decoded, "/") {
		if seg == "" || seg == "." || seg == ".." {
			continue
		}
		if last := seg[len(seg)-1]; last == '.' || last == ' ' {
			return "", ErrAmbiguousPath
		}
	}
	cleaned := path.Clean(decoded)
	if strings.HasSuffix(decoded, "/") && cleaned != "/" {
		cleaned += "/"
	}
	return cleaned, nil
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
