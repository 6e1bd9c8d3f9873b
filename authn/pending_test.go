package authn

import (
	"crypto/rand"
	"net/http"
	"strings"
	"testing"
	"time"
)

func newPending(t testing.TB) *PendingLogins {
	t.Helper()
	secrets := [][]byte{[]byte("pending-secret-0123456789abcdef0123456789")}
	b := Binding{App: "app", Issuer: "https://idp.example", ClientID: "c"}
	states, err := NewSealer(secrets, "login", b, LoginTTL)
	if err != nil {
		t.Fatal(err)
	}
	hints, err := NewSealer(secrets, "login-hint", b, LoginTTL)
	if err != nil {
		t.Fatal(err)
	}
	return NewPendingLogins(states, hints, "__Secure-gatehouse_login_")
}

// jar is a browser's cookies for /.gatehouse/: a cookie set again under
// the same name replaces the old one.
type jar map[string]string

func (j jar) request(t *testing.T) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "https://app.example/.gatehouse/callback", nil)
	for name, value := range j {
		r.AddCookie(&http.Cookie{Name: name, Value: value})
	}
	return r
}

func TestPendingLoginsAreBounded(t *testing.T) {
	p := newPending(t)
	browser := jar{}
	type login struct{ state, ret string }
	var logins []login
	for i := range 50 {
		st := &LoginState{State: rand.Text(), Nonce: rand.Text(), Verifier: "v", RedirectURI: "https://app.example/.gatehouse/callback",
			Return: "/tab/" + strings.Repeat("x", i), Started: time.Now().Unix()}
		if i%5 == 0 {
			st.StepUp = &StepUpState{ACR: []string{"mfa"}, Session: "s"}
		}
		name, value, state, err := p.Start(st)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(state, st.State+".") || len(state) > 600 {
			t.Fatalf("state parameter %q", state)
		}
		browser[name] = value
		logins = append(logins, login{state, st.Return})
	}
	total := 0
	for name, value := range browser {
		total += len(name) + 1 + len(value)
	}
	if len(browser) > LoginSlots || total > 1600 {
		t.Fatalf("%d login cookies of %d bytes in all after 50 logins, want at most %d and 1600 bytes", len(browser), total, LoginSlots)
	}
	t.Logf("50 logins leave %d login cookies, %d bytes", len(browser), total)

	// The newest login is always there; each older one is either there
	// or superseded, and then knows where it was going, never unknown.
	r := browser.request(t)
	found, superseded := 0, 0
	for i, l := range logins {
		st, name, got := p.Find(r, l.state)
		switch {
		case got == LoginFound:
			found++
			if st.Return != l.ret || !strings.HasPrefix(name, "__Secure-gatehouse_login_") || (i%5 == 0) != (st.StepUp != nil) {
				t.Errorf("login %d: found %+v in %s", i, st, name)
			}
		case got == LoginSuperseded:
			superseded++
			if st.Return != l.ret || (i%5 == 0) != (st.StepUp != nil) {
				t.Errorf("login %d superseded, restart %+v", i, st)
			}
		default:
			t.Errorf("login %d: %v", i, got)
		}
		if i == len(logins)-1 && got != LoginFound {
			t.Errorf("the newest login is %v, want found", got)
		}
	}
	if found != len(browser) || found+superseded != 50 {
		t.Errorf("%d found, %d superseded", found, superseded)
	}

	// Another browser, a tampered or foreign hint, a bare id: never found.
	if _, _, got := p.Find(jar{}.request(t), logins[49].state); got != LoginUnknown {
		t.Errorf("another browser's callback: %v, want unknown", got)
	}
	// A browser whose slot holds an older login than the callback's: the
	// callback's login was never in this browser.
	older := &LoginState{State: "A" + rand.Text()[1:], Started: time.Now().Unix() - 60}
	oname, ovalue, _, _ := p.Start(older)
	newer := &LoginState{State: "A" + rand.Text()[1:], Started: time.Now().Unix()}
	_, _, nstate, _ := p.Start(newer)
	if _, _, got := p.Find(jar{oname: ovalue}.request(t), nstate); got != LoginUnknown {
		t.Errorf("a slot holding an older login: %v, want unknown", got)
	}
	id, hint, _ := strings.Cut(logins[49].state, ".")
	otherID, otherHint, _ := strings.Cut(logins[48].state, ".")
	for name, state := range map[string]string{
		"bare id":              id,
		"tampered hint":        id + "." + hint[:20] + flipChar(hint[20]) + hint[21:],
		"another login's hint": id + "." + otherHint,
		"hint of another id":   otherID[:25] + "A." + hint,
		"lowercase id":         strings.ToLower(id) + "." + hint,
		"empty":                "",
		"huge":                 id + "." + strings.Repeat("A", 5000),
	} {
		if _, _, got := p.Find(r, state); got != LoginMalformed {
			t.Errorf("%s: %v, want malformed", name, got)
		}
	}
	// Two logins in one slot: the newer comes back first and is spent; a
	// replay of it is recognised, and the older one still restarts.
	first := &LoginState{State: "B" + rand.Text()[1:], Return: "/first", IdP: "partner", Started: time.Now().Unix() - 5}
	second := &LoginState{State: "B" + rand.Text()[1:], Return: "/second", Started: time.Now().Unix()}
	one := jar{}
	n1, v1, s1, _ := p.Start(first)
	one[n1] = v1
	n2, v2, s2, _ := p.Start(second)
	one[n2] = v2
	if _, _, got := p.Find(one.request(t), s2); got != LoginFound {
		t.Fatalf("the newer login: %v", got)
	}
	sn, sv, err := p.Spend(second)
	if err != nil || sn != n2 {
		t.Fatal(sn, err)
	}
	one[sn] = sv
	if _, _, got := p.Find(one.request(t), s2); got != LoginSpent {
		t.Errorf("a replay of the spent login: %v, want spent", got)
	}
	if st, _, got := p.Find(one.request(t), s1); got != LoginSuperseded || st.Return != "/first" || st.IdP != "partner" {
		t.Errorf("the older login after the newer was spent: %v %+v, want superseded to /first at partner", got, st)
	}
	// A return path over 1 KB returns to "/".
	st := &LoginState{State: rand.Text(), Return: "/" + strings.Repeat("y", 2000)}
	name, value, state, _ := p.Start(st)
	got, _, how := p.Find(jar{name: value}.request(t), state)
	if how != LoginFound || got.Return != "/" {
		t.Errorf("long return: %v %q", how, got.Return)
	}
}

func flipChar(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// FuzzFindLogin: no state parameter but the one Gatehouse made finds the
// browser's pending login, and nothing a client sends makes Find panic.
func FuzzFindLogin(f *testing.F) {
	p := newPending(f)
	st := &LoginState{State: "C" + rand.Text()[1:], Nonce: "n", Return: "/x", Started: time.Now().Unix()}
	name, value, state, err := p.Start(st)
	if err != nil {
		f.Fatal(err)
	}
	r, _ := http.NewRequest(http.MethodGet, "https://app.example/.gatehouse/callback", nil)
	r.AddCookie(&http.Cookie{Name: name, Value: value})
	f.Add(state)
	f.Add(st.State)
	f.Add(st.State + ".")
	f.Add(st.State + "." + state[len(st.State)+1:len(state)-2])
	f.Add("..")
	f.Fuzz(func(t *testing.T, in string) {
		got, _, how := p.Find(r, in)
		// (Another spelling of the same sealed hint, such as different
		// base64 padding bits, may find it: it is the same login.)
		if how == LoginFound && (!strings.HasPrefix(in, st.State+".") || got.State != st.State || got.Return != "/x") {
			t.Fatalf("%q found %+v", in, got)
		}
		if how == LoginSuperseded && got.State == st.State {
			t.Fatalf("%q: the pending login itself reported superseded", in)
		}
	})
}
