package authn

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// ErrNotAnOrigin is returned for a value that is not a web origin.
var ErrNotAnOrigin = errors.New("authn: not an origin (scheme://host[:port])")

// NormalizeOrigin returns an origin (RFC 6454: http or https, a host, an
// optional port; no path, userinfo, query or fragment) in the form
// origins are compared in: lowercase, without the scheme's default port.
// "null", the opaque origin browsers send from sandboxed frames, files
// and some redirects, is not an origin.
func NormalizeOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || strings.ContainsAny(s, " \t") {
		return "", ErrNotAnOrigin
	}
	host, port := u.Hostname(), u.Port()
	if host == "" || (strings.Contains(u.Host, ":") && port == "" && !strings.HasSuffix(u.Host, "]")) {
		return "", ErrNotAnOrigin
	}
	if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		port = ""
	}
	host = strings.ToLower(host)
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return u.Scheme + "://" + host, nil
}

// IsUpgrade reports whether r asks to switch to another protocol on its
// connection: an Upgrade header (WebSocket, h2c, anything), a Connection
// header naming upgrade, or a CONNECT (HTTP/2 and HTTP/3 carry WebSockets
// in an extended CONNECT). Such a request opens a channel the browser's
// same-origin rules do not guard.
func IsUpgrade(r *http.Request) bool {
	if r.Method == http.MethodConnect || len(r.Header["Upgrade"]) > 0 {
		return true
	}
	for _, v := range r.Header["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}
