package authn

import (
	"net/url"
	"strings"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// escapePath re-escapes a decoded path the way net/url does.
func escapePath(p string) string { return (&url.URL{Path: p}).EscapedPath() }
