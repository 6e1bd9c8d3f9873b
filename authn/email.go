package authn

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// ErrNotAnEmail is returned for an email claim that is not exactly one
// plain address.
var ErrNotAnEmail = errors.New("authn: not a single plain email address")

// ParseEmail accepts an email claim only when it is exactly one RFC 5322
// addr-spec in its plain form, local@domain: a dot-atom local part of at
// most 64 characters, and a domain of letter-digit-hyphen labels, ASCII
// only, 254 characters in all. A display name ("Alice <a@x>"), a comment
// ("a@x (y)"), a quoted local part ("a@b"@x), a domain literal, a second
// '@', whitespace, control characters and non-ASCII bytes are refused,
// since upstreams and mail libraries read such values in different ways
// ("a@evil.example@corp.example" is someone at evil.example to some of
// them). It returns the address with its domain in lowercase, the one
// form Gatehouse decides on and passes upstream.
func ParseEmail(s string) (string, error) {
	if len(s) > 254 {
		return "", ErrNotAnEmail
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || !dotAtom(local, isAtext) || len(local) > 64 || !dotAtom(domain, isLDH) {
		return "", ErrNotAnEmail
	}
	for label := range strings.SplitSeq(domain, ".") {
		if len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", ErrNotAnEmail
		}
	}
	return local + "@" + strings.ToLower(domain), nil
}

// EmailDomain is the domain of an address ParseEmail accepted, in
// lowercase; "" for anything else.
func EmailDomain(email string) string {
	at := strings.LastIndexByte(email, '@')
	if at < 0 || at == len(email)-1 {
		return ""
	}
	return strings.ToLower(email[at+1:])
}

// dotAtom reports whether s is one or more runs of allowed characters
// joined by single dots.
func dotAtom(s string, allowed func(byte) bool) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if s[i-1] == '.' {
				return false
			}
			continue
		}
		if !allowed(c) {
			return false
		}
	}
	return true
}

// isAtext is RFC 5322's atext: letters, digits and !#$%&'*+-/=?^_`{|}~.
func isAtext(c byte) bool {
	return isLDH(c) || strings.IndexByte("!#$%&'*+/=?^_`{|}~", c) >= 0
}

func isLDH(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-'
}

// ErrClaimText is returned for a claim value that is not clean text.
var ErrClaimText = errors.New("authn: claim holds control characters or invalid UTF-8")

// cleanText accepts a claim value only when it is valid UTF-8 without
// control characters (C0, DEL, C1) or invisible formatting characters
// that reorder text (bidi overrides), so that what a policy decides on
// is exactly what an identity header carries: nothing is removed later
// on the way out.
func cleanText(s string) error {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < ' ' || c == 0x7f {
				return ErrClaimText
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1,
			r >= 0x80 && r <= 0x9f,
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
			return ErrClaimText
		}
		i += size
	}
	return nil
}
