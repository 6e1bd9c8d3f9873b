package gate

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestStripManagedHeaders(t *testing.T) {
	m := newManagedHeaders([]string{"X-Remote-User", "X-Remote-Groups"}, nil, nil)
	r, _ := http.NewRequest(http.MethodGet, "https://app.example/", nil)
	r.Header = http.Header{
		"X-Remote-User":     {"a", "b"},
		"x-remote-user":     {"c"}, // not canonical: as sent over HTTP/2 or set by code
		"X_Remote_User":     {"d"},
		"X-REMOTE-GROUPS":   {"admins"},
		"x_remote_groups":   {"admins"},
		"X-Remote-User-Id":  {"kept"}, // a longer name is another header
		"X-Remote-Use":      {"kept"},
		"Connection":        {"keep-alive, X-Remote-User", "x_remote_groups"},
		"Trailer":           {"X-Remote-User"},
		"X-Forwarded-Proto": {"https"},
	}
	r.Trailer = http.Header{"X-Remote-User": nil, "X-Other": nil}
	m.strip(r)
	for k := range r.Header {
		if m.is(k) {
			t.Errorf("%s survived", k)
		}
	}
	if len(r.Header["X-Remote-User-Id"]) != 1 || len(r.Header["X-Remote-Use"]) != 1 {
		t.Error("stripped a header that is not managed")
	}
	if got := r.Header["Connection"]; len(got) != 1 || strings.TrimSpace(got[0]) != "keep-alive" {
		t.Errorf("Connection = %q, want keep-alive only", got)
	}
	if _, ok := r.Header["Trailer"]; ok {
		t.Errorf("Trailer = %q, want it gone", r.Header["Trailer"])
	}
	if _, ok := r.Trailer["X-Remote-User"]; ok {
		t.Error("a managed trailer survived")
	}
	if _, ok := r.Trailer["X-Other"]; !ok {
		t.Error("an unmanaged trailer was removed")
	}
}

// foreignByHand is the default foreign list, matched the slow and obvious
// way, to check headerSet against.
func foreignByHand(normalized string) bool {
	for _, p := range DefaultForeignHeaders {
		p = strings.ToLower(p)
		if pre, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(normalized, pre) {
				return true
			}
		} else if normalized == p {
			return true
		}
	}
	return false
}

func TestStripForeignIdentityHeaders(t *testing.T) {
	m := newManagedHeaders([]string{"X-Remote-User"}, append(append([]string(nil), DefaultForeignHeaders...), "X-Acme-Tenant", "X-Legacy-*"),
		[]string{"X-Goog-Authenticated-User-Email", "Cf-Access-*", "X-Remote-User"})
	stripped := []string{
		"X-Forwarded-User", "x-forwarded-email", "X_Forwarded_Groups", "X-FORWARDED-PREFERRED-USERNAME", "X-Forwarded-Access-Token",
		"X-Auth-Request-User", "x_auth_request_email", "X-Auth-Request-Groups", "X-Auth-Request-Access-Token",
		"Remote-User", "REMOTE_USER", "remote-groups", "Remote-Email", "Remote_Name",
		"X-Remote-User", "X-Remote-Anything", "x_remote_", "X-WEBAUTH-USER", "x-webauth-email", "X-Authenticated-User", "X-Authenticated-Userid",
		"X-Goog-Authenticated-User-Id", "X-Goog-Iap-Jwt-Assertion", "X-Ms-Client-Principal", "X-MS-CLIENT-PRINCIPAL-NAME",
		"X-Ms-Client-Principal-Idp", "X-Ms-Token-Aad-Access-Token", "X-Amzn-Oidc-Identity", "X-Amzn-Oidc-Data",
		"X-Pomerium-Jwt-Assertion", "X-Pomerium-Claim-Email", "X-Vouch-User", "X-Authentik-Username", "Tailscale-User-Login",
		"OIDC_CLAIM_email", "Oidc-Claim-Sub", "OIDC_access_token", "X-Gatehouse-Assertion", "X-Gatehouse-Anything",
		"X-Acme-Tenant", "x_legacy_role",
	}
	kept := []string{
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Userx", "X-Forwarded-Use", "Remote-Addr",
		"Remote-User-Agent", "X-Remot", "X-Authenticate", "User-Agent", "Accept", "Cookie", "X-Requested-With",
		"X-Goog-Authenticated-User-Email", "Cf-Access-Jwt-Assertion", "CF_ACCESS_CLIENT_ID", "X-Acme-Tenants", "X-Legacy",
	}
	r, _ := http.NewRequest(http.MethodGet, "https://app.example/", nil)
	r.Header = http.Header{}
	for _, n := range append(append([]string(nil), stripped...), kept...) {
		r.Header[n] = []string{"spoof"}
	}
	r.Header["Connection"] = []string{"keep-alive, X-Forwarded-User, remote_user, Cf-Access-Jwt-Assertion"}
	m.strip(r)
	for _, n := range stripped {
		if _, ok := r.Header[n]; ok {
			t.Errorf("%s survived", n)
		}
	}
	for _, n := range kept {
		if _, ok := r.Header[n]; !ok {
			t.Errorf("%s was removed", n)
		}
	}
	if got := r.Header["Connection"]; len(got) != 1 || strings.ReplaceAll(got[0], " ", "") != "keep-alive,Cf-Access-Jwt-Assertion" {
		t.Errorf("Connection = %q", got)
	}
}

func TestHeaderPatterns(t *testing.T) {
	for _, ok := range []string{"X-Acme-User", "X-Acme-*", "X_Legacy_*", "Rm"} {
		if err := CheckHeaderPattern(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"*", "X*", "X-Forwarded-*", "x_forwarded_*", "Co*", "Sec-*", "Se*", "Proxy-A*", "Host", "X Acme", "X-Acme-**", "Transfer-*"} {
		if err := CheckHeaderPattern(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestHeaderValueAndList(t *testing.T) {
	for in, want := range map[string]string{
		"plain":          "plain",
		"a\r\nX-Evil: 1": "aX-Evil: 1",
		"nul\x00byte":    "nulbyte",
		"tab\tkept? no":  "tabkept? no",
		"Zoë Çelik":      "Zoë Çelik",
		"del\x7f":        "del",
	} {
		if got := headerValue(in); got != want {
			t.Errorf("headerValue(%q) = %q, want %q", in, got, want)
		}
	}
	if got := joinList([]string{"a", "b,c", "50%"}); got != "a,b%2Cc,50%25" {
		t.Errorf("joinList = %q", got)
	}
}

func FuzzStripManagedHeaders(f *testing.F) {
	f.Add("X-Remote-User", "x_remote_user, keep-alive")
	f.Add("x-REMOTE_user", "close")
	f.Add("X-Forwarded-User", "x_auth_request_email")
	f.Add("remote_user", "X-WEBAUTH-USER")
	f.Add("x-ms-client-principal-name", "Cf-Access-Jwt-Assertion")
	m := newManagedHeaders([]string{"X-Remote-User"}, DefaultForeignHeaders, []string{"X-Vouch-Kept"})
	f.Fuzz(func(t *testing.T, name, connection string) {
		r, _ := http.NewRequest(http.MethodGet, "https://app.example/", nil)
		r.Header = http.Header{name: {"spoof"}, "Connection": {connection}}
		m.strip(r)
		for k := range r.Header {
			if n := NormalizeHeaderName(k); n == "x-remote-user" || (foreignByHand(n) && n != "x-vouch-kept") {
				t.Fatalf("%q survived", k)
			}
		}
		for _, v := range r.Header["Connection"] {
			for tok := range strings.SplitSeq(v, ",") {
				if n := NormalizeHeaderName(strings.TrimSpace(tok)); n == "x-remote-user" || (foreignByHand(n) && n != "x-vouch-kept") {
					t.Fatalf("Connection still names %q", tok)
				}
			}
		}
	})
}

// testCookies are the cookie names of cookie_name gatehouse.
func testCookies() *cookies {
	return &cookies{base: "gatehouse", session: "__Host-gatehouse", idToken: "__Secure-gatehouse_idt", loginPrefix: "__Secure-gatehouse_login_"}
}

func TestStripOwnCookies(t *testing.T) {
	jar := testCookies()
	cases := []struct {
		in   []string
		want []string // nil: no Cookie header left
	}{
		{[]string{"a=1; b=2"}, []string{"a=1; b=2"}},
		{[]string{"__Host-gatehouse=sealed"}, nil},
		{[]string{"a=1; __Host-gatehouse=sealed; b=2"}, []string{"a=1; b=2"}},
		{[]string{"a=1;__Host-gatehouse=x;b=2"}, []string{"a=1; b=2"}},
		{[]string{"__Host-gatehouse=x; __Host-gatehouse=y"}, nil},
		{[]string{"__Secure-gatehouse_login_abc=x; __Secure-gatehouse_idt=y; app=z"}, []string{"app=z"}},
		{[]string{"a=1", "__Host-gatehouse=x", "b=2"}, []string{"a=1", "b=2"}},
		{[]string{"__Host-gatehouse=x", "__Host-gatehouse=y"}, nil},
		{[]string{"gatehouse_pref=dark; __host-gatehouse=x"}, []string{"gatehouse_pref=dark; __host-gatehouse=x"}}, // not ours: names are case-sensitive
		{[]string{"x=__Host-gatehouse=1"}, []string{"x=__Host-gatehouse=1"}},
		{[]string{" __Host-gatehouse =x; ;a=1 "}, []string{"a=1"}},
		{[]string{`q="a; __Host-gatehouse=b"`}, []string{`q="a`}}, // quoted ';' is not valid cookie syntax: split like a server does
		{[]string{"__Host-gatehousex=1; __Host-gatehouse"}, []string{"__Host-gatehousex=1"}},
		{[]string{"\v__Host-gatehouse=x; a=1"}, []string{"a=1"}},                         // ours to a server that trims more
		{[]string{"\vgatehouse; __Host-gatehouse=x", "0"}, []string{"\vgatehouse", "0"}}, // found by the fuzzer: not "gatehouse", which parses
	}
	for _, c := range cases {
		r, _ := http.NewRequest(http.MethodGet, "https://app.example/", nil)
		r.Header["Cookie"] = append([]string(nil), c.in...)
		jar.strip(r)
		got, ok := r.Header["Cookie"]
		if c.want == nil && ok || c.want != nil && strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%q → %q (present %v), want %q", c.in, got, ok, c.want)
		}
	}
}

// FuzzStripOwnCookies: none of Gatehouse's cookies survives, by any
// parse a server might make, and every other cookie does, in order.
func FuzzStripOwnCookies(f *testing.F) {
	f.Add("a=1; __Host-gatehouse=x; b=2", "c=3")
	f.Add("__Secure-gatehouse_login_s=1;__Secure-gatehouse_idt=2", "")
	jar := testCookies()
	f.Fuzz(func(t *testing.T, v1, v2 string) {
		r, _ := http.NewRequest(http.MethodGet, "https://app.example/", nil)
		r.Header["Cookie"] = []string{v1, v2}
		before := r.Cookies()
		jar.strip(r)
		after := r.Cookies()
		var others []string
		for _, c := range before {
			if !jar.own(c.Name) {
				others = append(others, c.Name+"="+c.Value)
			}
		}
		var got []string
		for _, c := range after {
			if jar.own(c.Name) {
				t.Fatalf("%q survived in %q", c.Name, r.Header["Cookie"])
			}
			got = append(got, c.Name+"="+c.Value)
		}
		if strings.Join(got, "\x00") != strings.Join(others, "\x00") {
			t.Fatalf("other cookies changed: %q → %q", others, got)
		}
		for _, v := range r.Header["Cookie"] {
			for part := range strings.SplitSeq(v, ";") {
				name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
				if jar.own(strings.TrimSpace(name)) {
					t.Fatalf("%q left in %q", name, v)
				}
			}
		}
	})
}

func TestCleanText(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"  needs the payroll db  ", 100, "needs the payroll db"},
		{"line one\nline two\r\x00", 100, "line one line two"},
		{"pay \u202eyrallop\u202c now", 100, "pay  yrallop  now"}, // bidi override and pop
		{"a\u200bb\u2066c\u2069", 100, "a b c"},                   // zero-width space, isolates
		{"bad \xff\xfe bytes", 100, "bad    bytes"},               // invalid UTF-8
		{"héllo wörld", 2, "h"},                                   // never cut inside a rune
		{"日本語", 4, "日"},
		{"ok", 2, "ok"},
	} {
		got := CleanText(c.in, c.max)
		if got != c.want || !utf8.ValidString(got) || len(got) > c.max {
			t.Errorf("CleanText(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}
