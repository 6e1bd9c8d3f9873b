package authn

import (
	"net/url"
	"strings"
	"testing"
)

func TestSafeReturnPath(t *testing.T) {
	kept := []string{
		"/",
		"/app",
		"/app/page?x=1&y=2",
		"/search?q=a%20b",
		"/a/b/c#frag",
		"/report?next=https://example.com", // a same-origin path; the app owns its own parameters
		"/%C3%A9t%C3%A9",
		"/.gatehouse/approvals",
		"/.gatehouse/access?notice=requested",
		"/.gatehouse/resubmit",
	}
	for _, in := range kept {
		if got := SafeReturnPath(in); got != in {
			t.Errorf("SafeReturnPath(%q) = %q, want it kept", in, got)
		}
	}
	hostile := []string{
		"",
		"//evil.example",
		"//evil.example/x",
		"///evil.example",
		"/\\evil.example",
		"\\\\evil.example",
		"/%5Cevil.example",
		"/%5cevil.example",
		"/%2F%2Fevil.example",
		"/%2f/evil.example",
		"/%252F%252Fevil.example",
		"/%25252F%25252Fevil.example",
		"https:evil.example",
		"https://evil.example",
		"http://evil.example/",
		"javascript:alert(1)",
		"data:text/html,<script>",
		"evil.example",
		"/\tevil",
		"/\t/evil.example",
		"/\n/evil.example",
		"/\r\n/evil.example",
		"/%09/evil.example",
		"/%0d%0a/evil.example",
		"/x%0d%0aSet-Cookie:a=b",
		"/ /evil.example",
		"/@evil.example", // harmless path, but '@' keeps it; check below
		"//user@evil.example",
		"//evil.example%40good.example",
		"/.gatehouse/logout",
		"/.GATEHOUSE/logout",
		"/x/../.gatehouse/logout",
		"/%2e%2e/.gatehouse/logout",
		"/admin;x",
		"/é", // raw non-ASCII
		"/" + strings.Repeat("a", 3000),
		"/%",
		"/%zz",
		"//ｅvil.example", // fullwidth e (IDN trick)
		"/\\/evil.example",
		"/x\\y",
	}
	for _, in := range hostile {
		got := SafeReturnPath(in)
		if in == "/@evil.example" {
			// Same origin: a path segment, not userinfo.
			if got != in {
				t.Errorf("SafeReturnPath(%q) = %q, want it kept", in, got)
			}
			continue
		}
		if got != "/" {
			t.Errorf("SafeReturnPath(%q) = %q, want /", in, got)
		}
	}
}

// FuzzSafeReturnPath checks the one property that matters: whatever comes
// in, what comes out stays on this origin however a browser resolves it.
func FuzzSafeReturnPath(f *testing.F) {
	for _, s := range []string{"/", "/a?b=c", "//evil", "/\\evil", "/%5Cevil", "https:evil", "/\t/evil", "/%2F%2Fevil"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://app.example/dir/page")
	f.Fuzz(func(t *testing.T, in string) {
		out := SafeReturnPath(in)
		if out != "/" && out != in {
			t.Fatalf("SafeReturnPath(%q) = %q: must be the input or /", in, out)
		}
		// Browsers strip tabs and newlines from URLs and read '\' as '/'.
		browser := strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(out)
		u, err := base.Parse(browser)
		if err != nil {
			t.Fatalf("kept %q which does not parse: %v", out, err)
		}
		if u.Host != "app.example" || u.Scheme != "https" || u.User != nil {
			t.Fatalf("SafeReturnPath(%q) = %q leads to %s", in, out, u)
		}
		if dec, err := url.PathUnescape(out); err == nil && len(dec) > 1 && (dec[1] == '/' || dec[1] == '\\') {
			t.Fatalf("SafeReturnPath(%q) = %q decodes to a scheme-relative URL", in, out)
		}
	})
}
