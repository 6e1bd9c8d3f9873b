package module

import (
	"net/http"
	"strings"
	"testing"
)

func TestStripManagedHeaders(t *testing.T) {
	m := newManagedHeaders([]string{"X-Remote-User", "X-Remote-Groups"})
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
	m := newManagedHeaders([]string{"X-Remote-User"})
	f.Fuzz(func(t *testing.T, name, connection string) {
		r, _ := http.NewRequest(http.MethodGet, "https://app.example/", nil)
		r.Header = http.Header{name: {"spoof"}, "Connection": {connection}}
		m.strip(r)
		for k := range r.Header {
			if normalizeHeaderName(k) == "x-remote-user" {
				t.Fatalf("%q survived", k)
			}
		}
		for _, v := range r.Header["Connection"] {
			for tok := range strings.SplitSeq(v, ",") {
				if normalizeHeaderName(strings.TrimSpace(tok)) == "x-remote-user" {
					t.Fatalf("Connection still names %q", tok)
				}
			}
		}
	})
}
