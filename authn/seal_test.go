package authn

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	secretA = []byte("0123456789abcdef0123456789abcdef-A")
	secretB = []byte("0123456789abcdef0123456789abcdef-B")
	bind    = Binding{App: "payroll", Issuer: "https://idp.example", ClientID: "gatehouse"}
)

func mustSealer(t testing.TB, secrets [][]byte, purpose string, b Binding) *Sealer {
	t.Helper()
	s, err := NewSealer(secrets, purpose, b, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealerRefusesShortSecrets(t *testing.T) {
	for _, secrets := range [][][]byte{nil, {[]byte("short")}, {secretA, []byte(strings.Repeat("x", 31))}} {
		if _, err := NewSealer(secrets, "session", bind, time.Hour); !errors.Is(err, ErrSecretTooShort) {
			t.Errorf("NewSealer(%d secrets) err = %v, want ErrSecretTooShort", len(secrets), err)
		}
	}
}

func TestSealerRoundTripAndRotation(t *testing.T) {
	old := mustSealer(t, [][]byte{secretA}, "session", bind)
	rotated := mustSealer(t, [][]byte{secretB, secretA}, "session", bind)
	in := Session{ID: "id1", Subject: "alice", Created: 1, LastSeen: 2}
	v, err := old.Seal("c", in)
	if err != nil {
		t.Fatal(err)
	}
	var out Session
	if err := rotated.Open("c", v, &out); err != nil || out.Subject != "alice" {
		t.Fatalf("rotated sealer cannot open an old cookie: %v %+v", err, out)
	}
	v2, _ := rotated.Seal("c", in)
	if err := old.Open("c", v2, &out); !errors.Is(err, ErrInvalidCookie) {
		t.Fatalf("a cookie sealed with the new key opened with only the old one: %v", err)
	}
}

func TestSealerRefusesHostileCookies(t *testing.T) {
	s := mustSealer(t, [][]byte{secretA}, "session", bind)
	good, err := s.Seal("c", Session{ID: "x", Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	flip := []byte(good)
	flip[len(flip)/2] ^= 1
	cases := map[string]string{
		"empty":            "",
		"tampered":         string(flip),
		"truncated":        good[:len(good)-4],
		"not base64":       "!!!!@@@@####",
		"8 KB":             strings.Repeat("A", 8192),
		"just over limit":  strings.Repeat("A", MaxCookieLen+1),
		"plain JSON":       `{"id":"x","sub":"admin"}`,
		"base64 JSON":      base64.URLEncoding.EncodeToString([]byte(`{"id":"x","sub":"admin"}`)),
		"three parts junk": base64.URLEncoding.EncodeToString([]byte("1|abc|def")),
	}
	for name, v := range cases {
		var out Session
		if err := s.Open("c", v, &out); !errors.Is(err, ErrInvalidCookie) {
			t.Errorf("%s: Open err = %v (%+v), want ErrInvalidCookie", name, err, out)
		}
	}
	// The same value under another cookie name, purpose or binding.
	var out Session
	if err := s.Open("other", good, &out); err == nil {
		t.Error("opened under another cookie name")
	}
	for name, other := range map[string]*Sealer{
		"purpose":   mustSealer(t, [][]byte{secretA}, "login", bind),
		"app":       mustSealer(t, [][]byte{secretA}, "session", Binding{App: "crm", Issuer: bind.Issuer, ClientID: bind.ClientID}),
		"issuer":    mustSealer(t, [][]byte{secretA}, "session", Binding{App: bind.App, Issuer: "https://evil.example", ClientID: bind.ClientID}),
		"client_id": mustSealer(t, [][]byte{secretA}, "session", Binding{App: bind.App, Issuer: bind.Issuer, ClientID: "other"}),
		"key":       mustSealer(t, [][]byte{secretB}, "session", bind),
	} {
		if err := other.Open("c", good, &out); err == nil {
			t.Errorf("a cookie opened under another %s", name)
		}
	}
}

func TestSealerMaxAge(t *testing.T) {
	s, err := NewSealer([][]byte{secretA}, "login", bind, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Seal("c", "x")
	var out string
	if err := s.Open("c", v, &out); err != nil {
		t.Fatalf("a fresh value: %v", err)
	}
	later := time.Now().Add(2100 * time.Millisecond)
	s.SetClock(func() time.Time { return later })
	if err := s.Open("c", v, &out); !errors.Is(err, ErrInvalidCookie) {
		t.Fatalf("opened a value older than its max age: %v", err)
	}
}

// TestSealerMaxLength: a sealer for a store seals and opens values far
// over a cookie's size, up to its own bound; a cookie sealer refuses them.
func TestSealerMaxLength(t *testing.T) {
	big := strings.Repeat("form field ", 20000)
	cookie := mustSealer(t, [][]byte{secretA}, "form", bind)
	if _, err := cookie.Seal("c", big); err == nil {
		t.Error("a cookie sealer sealed a value over MaxCookieLen")
	}
	store := mustSealer(t, [][]byte{secretA}, "form", bind)
	store.SetMaxLength(1 << 20)
	v, err := store.Seal("c", big)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := store.Open("c", v, &out); err != nil || out != big {
		t.Fatalf("a large value did not open: %v", err)
	}
	if err := cookie.Open("c", v, &out); !errors.Is(err, ErrInvalidCookie) {
		t.Errorf("a cookie sealer opened a value over MaxCookieLen: %v", err)
	}
	store.SetMaxLength(len(v) - 1)
	if err := store.Open("c", v, &out); !errors.Is(err, ErrInvalidCookie) {
		t.Errorf("opened a value over the bound: %v", err)
	}
}

func FuzzOpenSession(f *testing.F) {
	s := mustSealer(f, [][]byte{secretA}, "session", bind)
	good, _ := s.Seal("c", Session{ID: "x", Subject: "alice"})
	for _, v := range []string{good, "", "a|b|c", strings.Repeat("A", 100), good[:10]} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		// Whatever opens must be exactly what was sealed: a mutation that
		// opens to anything else would be a forgery.
		var out Session
		if err := s.Open("c", v, &out); err == nil && (out.ID != "x" || out.Subject != "alice" || out.Email != "" || len(out.Groups) != 0) {
			t.Fatalf("a mutated cookie opened to %+v", out)
		}
	})
}
