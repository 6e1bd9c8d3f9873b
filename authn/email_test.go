package authn

import (
	"net/mail"
	"strings"
	"testing"
)

// hostileEmails are email claims that must never be used as an address.
var hostileEmails = []string{
	"a@evil.com@corp.test",                   // a second '@'
	"carol@evil.com\u0000@corp.test",         // NUL: headerValue used to drop it on the way out
	"carol@evil.com\x00@corp.test",           // the same, as a raw byte
	`"a@b"@corp.test`,                        // quoted local part
	`"alice"@corp.test`,                      // quoted, harmless-looking
	"a@corp.test (x)",                        // comment
	"(x)a@corp.test",                         // leading comment
	"Alice <alice@corp.test>",                // display name
	"<alice@corp.test>",                      // angle address
	"alice@corp.test, mallory@evil.test",     // a list
	"alice@corp.test\r\nX-Injected: 1",       // header injection
	"alice@corp.test\n",                      // trailing newline
	" alice@corp.test",                       // leading space
	"alice @corp.test",                       // inner space
	"alice@corp.test.",                       // trailing dot
	"alice@.corp.test",                       // leading dot in the domain
	"alice@corp..test",                       // empty label
	".alice@corp.test",                       // leading dot
	"alice.@corp.test",                       // trailing dot in the local part
	"al..ice@corp.test",                      // double dot
	"alice@[10.0.0.1]",                       // domain literal
	"alice@corp_test.example",                // underscore in the domain
	"alice@-corp.test",                       // label starting with '-'
	"alice@corp-.test",                       // label ending with '-'
	"alice@",                                 // no domain
	"@corp.test",                             // no local part
	"alice",                                  // no '@'
	"",                                       // empty
	"ålice@corp.test",                        // non-ASCII local part
	"alice@cörp.test",                        // non-ASCII domain
	"alice@corp.test\u202e",                  // bidi override
	"alice\\@corp.test",                      // backslash
	"alice;x@corp.test",                      // ';'
	"alice:x@corp.test",                      // ':'
	"alice,x@corp.test",                      // ','
	strings.Repeat("a", 65) + "@corp.test",   // local part over 64
	"a@" + strings.Repeat("b", 64) + ".test", // label over 63
	"a@" + strings.Repeat("bbbbbbbbb.", 26) + "test", // over 254 in all
}

func TestParseEmail(t *testing.T) {
	for in, want := range map[string]string{
		"alice@corp.test":          "alice@corp.test",
		"Alice@Corp.TEST":          "Alice@corp.test",
		"alice.smith+hr@corp.test": "alice.smith+hr@corp.test",
		"o'brien@corp.test":        "o'brien@corp.test",
		"a!#$%&'*+/=?^_`{|}~-@x.y": "a!#$%&'*+/=?^_`{|}~-@x.y",
		"alice@xn--crp-ola.test":   "alice@xn--crp-ola.test",
		"alice@localhost":          "alice@localhost",
		"x@1.2.3.4":                "x@1.2.3.4",
	} {
		got, err := ParseEmail(in)
		if err != nil || got != want {
			t.Errorf("ParseEmail(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range hostileEmails {
		if got, err := ParseEmail(in); err == nil {
			t.Errorf("ParseEmail(%q) = %q, want ErrNotAnEmail", in, got)
		}
	}
}

func FuzzParseEmail(f *testing.F) {
	for _, s := range append([]string{"alice@corp.test", "Alice.Smith+x@Corp.Test"}, hostileEmails...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := ParseEmail(in)
		if err != nil {
			return
		}
		// One address, one '@', printable ASCII only, stable, and read
		// the same way by Go's mail parser.
		if strings.Count(out, "@") != 1 {
			t.Fatalf("%q -> %q has %d '@'", in, out, strings.Count(out, "@"))
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),:;<>[\]`, c) >= 0 {
				t.Fatalf("%q -> %q holds %q", in, out, c)
			}
		}
		if again, err := ParseEmail(out); err != nil || again != out {
			t.Fatalf("not stable: %q -> %q -> %q, %v", in, out, again, err)
		}
		if a, err := mail.ParseAddress(out); err != nil || a.Name != "" || !strings.EqualFold(a.Address, out) {
			t.Fatalf("net/mail reads %q as %+v, %v", out, a, err)
		}
		if !strings.EqualFold(out, in) {
			t.Fatalf("%q -> %q changed more than case", in, out)
		}
	})
}

func TestCleanText(t *testing.T) {
	for _, ok := range []string{"", "Alice", "Zoë Çelik", "李雷", "a,b%c", "emoji 😀"} {
		if err := cleanText(ok); err != nil {
			t.Errorf("cleanText(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"a\x00", "a\nb", "a\tb", "a\x7f", "a\u0085", "\u202eevil", "a\u2066b", "\xff", "a\xc0\xae", "\u200f"} {
		if err := cleanText(bad); err == nil {
			t.Errorf("cleanText(%q) accepted", bad)
		}
	}
}
