package authn

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCanonicalPath(t *testing.T) {
	ok := []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/admin", "/admin"},
		{"/Admin/X", "/Admin/X"},
		{"//admin/x", "/admin/x"},
		{"/x/../admin/x", "/admin/x"},
		{"/./admin", "/admin"},
		{"/%61dmin/x", "/admin/x"},
		{"/%2e/admin", "/admin"},
		{"/%2e%2e/admin", "/admin"},
		{"/../../admin", "/admin"},
		{"/admin/", "/admin/"},
		{"/admin//", "/admin/"},
		{"/a%20b", "/a b"},
		{"/caf%C3%A9", "/café"},
		{"/.gatehouse/../admin", "/admin"},
		{"/100%25", "/100%"},
		{"/.well-known/x", "/.well-known/x"},
	}
	for _, c := range ok {
		got, err := CanonicalPath(c.in)
		if err != nil || got != c.want {
			t.Errorf("CanonicalPath(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	hostile := []string{
		"admin",                       // not absolute
		"*",                           // OPTIONS *
		"/admin;x",                    // path parameter
		"/admin;/x",                   // path parameter in a segment
		"/admin%3bx",                  // encoded ;
		"/admin%3Bx",                  // encoded ;
		"/admin\\x",                   // backslash
		"/admin%5cx",                  // encoded backslash
		"/admin%5Cx",                  // encoded backslash
		"/admin%2fx",                  // encoded slash
		"/admin%2Fx",                  // encoded slash
		"/admin%2f",                   // encoded slash at end
		"/admin.",                     // trailing dot
		"/admin./x",                   // trailing dot mid-path
		"/admin%2e",                   // encoded trailing dot
		"/admin%20",                   // trailing space
		"/admin%20/x",                 // trailing space mid-path
		"/...",                        // dots only
		"/admin%00",                   // NUL
		"/admin%0a",                   // LF
		"/admin%0d%0a",                // CRLF
		"/admin%09",                   // tab
		"/admin%7f",                   // DEL
		"/admin\x00",                  // raw NUL
		"/admin%",                     // truncated escape
		"/admin%2",                    // truncated escape
		"/admin%zz",                   // invalid escape
		"/admin%252f",                 // double encoding of /
		"/admin%252e%252e",            // double encoding of ..
		"/x/%c0%ae%c0%ae/admin",       // overlong '.' (UTF-8 decoders of old read "..")
		"/x/%c0%ae%c0%ae%c0%afadmin",  // overlong ".." and '/'
		"/x/%e0%80%ae%e0%80%ae/admin", // three-byte overlong '.'
		"/x/%c0%2e",                   // truncated two-byte sequence
		"/x/%ed%a0%80",                // UTF-16 surrogate
		"/x/%f8%88%80%80%80",          // five-byte form
		"/x/%ff",                      // never valid
		"/x/%c2%85admin",              // C1 control NEL (a line break to some)
		"/x/%c2%9b",                   // C1 control CSI
		"/x/\xc0\xae\xc0\xae/admin",   // raw overlong bytes
		"/public;/../admin",           // path parameter before a dot segment
		"/x/%ef%bf%bd",                // U+FFFD: what a lossy decoder made of bad bytes
	}
	for _, in := range hostile {
		if got, err := CanonicalPath(in); !errors.Is(err, ErrAmbiguousPath) {
			t.Errorf("CanonicalPath(%q) = %q, %v; want ErrAmbiguousPath", in, got, err)
		}
	}
}

func TestCheckRequestTarget(t *testing.T) {
	for _, ok := range []string{
		"/", "/admin?x=;%2f", "/a/../b", "*", "/caf%C3%A9", "https://app.example.com/x?y",
		"http://app.example.com", "http://app.example.com?q", "/x?%c0%ae",
	} {
		if err := CheckRequestTarget(ok); err != nil {
			t.Errorf("CheckRequestTarget(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{
		"/public;/../admin", "/x/%c0%ae%c0%ae/admin", "/x/%2e%2e%2fadmin", "/a\\..\\b", "/a%00",
		"https://app.example.com/a;/../b", "https://app.example.com/%c0%ae", "app.example.com:443",
		"", "admin", "://x/a", "/%c2%85", "/x/..%5cadmin",
	} {
		if err := CheckRequestTarget(bad); !errors.Is(err, ErrAmbiguousPath) {
			t.Errorf("CheckRequestTarget(%q) = %v, want ErrAmbiguousPath", bad, err)
		}
	}
}

func TestIsInternalPath(t *testing.T) {
	for in, want := range map[string]bool{
		"/.gatehouse":           true,
		"/.gatehouse/":          true,
		"/.gatehouse/callback":  true,
		"/.GATEHOUSE/healthz":   true,
		"/.gatehousex":          false,
		"/.gatehouse-admin":     false,
		"/x/.gatehouse/healthz": false,
		"/":                     false,
	} {
		if got := IsInternalPath(in); got != want {
			t.Errorf("IsInternalPath(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/", "/admin/../x", "//a", "/%2e%2e/", "/a;b", "/a%2fb", "/a.", "/%252f", "/x/%c0%ae%c0%ae/a", "/%c2%85"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := CanonicalPath(in)
		// The raw-target check refuses exactly what the canonicaliser
		// refuses, for an origin-form path.
		if strings.HasPrefix(in, "/") && !strings.ContainsRune(in, '?') {
			if rawErr := CheckRequestTarget(in); (rawErr != nil) != (err != nil) {
				t.Fatalf("%q: CanonicalPath %v, CheckRequestTarget %v", in, err, rawErr)
			}
		}
		if err != nil {
			return
		}
		if !validPathText(out) || !utf8.ValidString(out) {
			t.Fatalf("%q -> %q is not clean UTF-8", in, out)
		}
		// The canonical form is stable, absolute and free of what it refuses.
		again, err := CanonicalPath(escapePath(out))
		if err != nil || again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", in, out, again, err)
		}
		if out[0] != '/' {
			t.Fatalf("%q -> %q is not absolute", in, out)
		}
		for _, bad := range []string{"//", "/./", "/../", "\\", ";"} {
			if contains(out, bad) {
				t.Fatalf("%q -> %q contains %q", in, out, bad)
			}
		}
	})
}
