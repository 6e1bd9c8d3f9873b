package authn

import (
	"errors"
	"testing"
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
		"admin",            // not absolute
		"*",                // OPTIONS *
		"/admin;x",         // path parameter
		"/admin;/x",        // path parameter in a segment
		"/admin%3bx",       // encoded ;
		"/admin%3Bx",       // encoded ;
		"/admin\\x",        // backslash
		"/admin%5cx",       // encoded backslash
		"/admin%5Cx",       // encoded backslash
		"/admin%2fx",       // encoded slash
		"/admin%2Fx",       // encoded slash
		"/admin%2f",        // encoded slash at end
		"/admin.",          // trailing dot
		"/admin./x",        // trailing dot mid-path
		"/admin%2e",        // encoded trailing dot
		"/admin%20",        // trailing space
		"/admin%20/x",      // trailing space mid-path
		"/...",             // dots only
		"/admin%00",        // NUL
		"/admin%0a",        // LF
		"/admin%0d%0a",     // CRLF
		"/admin%09",        // tab
		"/admin%7f",        // DEL
		"/admin\x00",       // raw NUL
		"/admin%",          // truncated escape
		"/admin%2",         // truncated escape
		"/admin%zz",        // invalid escape
		"/admin%252f",      // double encoding of /
		"/admin%252e%252e", // double encoding of ..
	}
	for _, in := range hostile {
		if got, err := CanonicalPath(in); !errors.Is(err, ErrAmbiguousPath) {
			t.Errorf("CanonicalPath(%q) = %q, %v; want ErrAmbiguousPath", in, got, err)
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
	for _, s := range []string{"/", "/admin/../x", "//a", "/%2e%2e/", "/a;b", "/a%2fb", "/a.", "/%252f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := CanonicalPath(in)
		if err != nil {
			return
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
