package authn

import (
	"net/http"
	"strings"
	"testing"
)

func TestNormalizeOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://app.example.com":       "https://app.example.com",
		"HTTPS://App.Example.COM":       "https://app.example.com",
		"https://app.example.com:443":   "https://app.example.com",
		"https://app.example.com:8443":  "https://app.example.com:8443",
		"http://localhost:80":           "http://localhost",
		"http://127.0.0.1:3000":         "http://127.0.0.1:3000",
		"https://[::1]:8443":            "https://[::1]:8443",
		"https://[::1]":                 "https://[::1]",
		"https://app.example.com/":      "https://app.example.com",
		"https://xn--bcher-kva.example": "https://xn--bcher-kva.example",
	} {
		if got, err := NormalizeOrigin(in); err != nil || got != want {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{
		"null", "", "*", "app.example.com", "//app.example.com", "ftp://app.example.com", "https://", "https://user@app.example.com",
		"https://app.example.com/path", "https://app.example.com?x", "https://app.example.com#x", "https://app.example.com:",
		"javascript:alert(1)", "data:text/html,x", "https://app.example.com, https://evil.example", "https://app example.com",
		"file:///etc/passwd", "https:app.example.com",
	} {
		if got, err := NormalizeOrigin(bad); err == nil {
			t.Errorf("NormalizeOrigin(%q) = %q, want an error", bad, got)
		}
	}
}

func TestIsUpgrade(t *testing.T) {
	up := func(method string, kv ...string) bool {
		r, _ := http.NewRequest(method, "https://app.example.com/ws", nil)
		for i := 0; i+1 < len(kv); i += 2 {
			r.Header.Add(kv[i], kv[i+1])
		}
		return IsUpgrade(r)
	}
	for name, got := range map[string]bool{
		"websocket":                  up("GET", "Connection", "Upgrade", "Upgrade", "websocket"),
		"h2c":                        up("GET", "Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c"),
		"Upgrade without Connection": up("GET", "Upgrade", "websocket"),
		"Connection: upgrade alone":  up("POST", "Connection", "keep-alive, upgrade"),
		"extended CONNECT (HTTP/2)":  up("CONNECT", ":protocol", "websocket"),
		"CONNECT":                    up("CONNECT"),
	} {
		if !got {
			t.Errorf("%s: not an upgrade", name)
		}
	}
	if up("GET", "Connection", "keep-alive") || up("POST") {
		t.Error("an ordinary request is an upgrade")
	}
}

func FuzzNormalizeOrigin(f *testing.F) {
	for _, s := range []string{"https://app.example.com:443", "HTTP://X:80", "https://[::1]:8443", "null", "https://a.example/x", "https://a:b@c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := NormalizeOrigin(in)
		if err != nil {
			return
		}
		// Stable, lowercase, no path, no default port, no userinfo.
		if again, err := NormalizeOrigin(out); err != nil || again != out {
			t.Fatalf("not stable: %q -> %q -> %q, %v", in, out, again, err)
		}
		if out != strings.ToLower(out) || strings.HasSuffix(out, ":443") && strings.HasPrefix(out, "https:") ||
			strings.HasSuffix(out, ":80") && strings.HasPrefix(out, "http:") || strings.ContainsAny(out, "@?#\\ ") {
			t.Fatalf("%q -> %q", in, out)
		}
		rest := strings.TrimPrefix(strings.TrimPrefix(out, "https://"), "http://")
		if rest == out || strings.Contains(rest, "/") {
			t.Fatalf("%q -> %q is not scheme://host[:port]", in, out)
		}
	})
}
