package authn

import (
	"errors"
	"testing"
	"time"
)

func TestCombine(t *testing.T) {
	mfa, eid := "urn:gatehouse:loa:mfa", "urn:eid:high"
	got, err := Combine(
		Requirement{ACR: []string{mfa, "urn:hw"}, MaxAge: 10 * time.Minute},
		Requirement{ACR: []string{mfa}, AMR: []string{"otp"}, MaxAge: 5 * time.Minute},
		Requirement{AMR: []string{"hwk", "otp"}},
		Requirement{Provider: "eid", ACR: []string{eid}},
		Requirement{Provider: "eid", MaxAge: time.Hour},
	)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d requirements", len(got))
	}
	p := got[0]
	if p.Provider != "" || len(p.ACR) != 1 || p.ACR[0] != mfa || p.MaxAge != 5*time.Minute || len(p.AMR) != 2 || p.AMR[0] != "hwk" || p.AMR[1] != "otp" {
		t.Errorf("primary: %+v", p)
	}
	if e := got[1]; e.Provider != "eid" || e.ACR[0] != eid || e.MaxAge != time.Hour {
		t.Errorf("eid: %+v", e)
	}
	if _, err := Combine(Requirement{ACR: []string{"a"}}, Requirement{ACR: []string{"b"}}); !errors.Is(err, ErrConflictingStepUp) {
		t.Errorf("disjoint acr sets: %v", err)
	}
	// Disjoint sets at different providers do not conflict.
	if _, err := Combine(Requirement{ACR: []string{"a"}}, Requirement{Provider: "x", ACR: []string{"b"}}); err != nil {
		t.Errorf("different providers: %v", err)
	}
}

func TestRequirementUnmet(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	at := func(ago time.Duration) int64 { return now.Add(-ago).Unix() }
	mfa := Requirement{ACR: []string{"mfa", "hw"}, AMR: []string{"otp"}, MaxAge: 5 * time.Minute}
	cases := []struct {
		name string
		s    Session
		r    Requirement
		want string
	}{
		{"met", Session{ACR: "mfa", AMR: []string{"pwd", "otp"}, AuthTime: at(time.Minute)}, mfa, ""},
		{"other accepted acr", Session{ACR: "hw", AMR: []string{"otp"}, AuthTime: at(time.Minute)}, mfa, ""},
		{"weaker acr", Session{ACR: "pwd", AMR: []string{"otp"}, AuthTime: at(time.Minute)}, mfa, "acr"},
		{"no acr", Session{AMR: []string{"otp"}, AuthTime: at(time.Minute)}, mfa, "acr"},
		{"missing amr", Session{ACR: "mfa", AMR: []string{"pwd"}, AuthTime: at(time.Minute)}, mfa, "amr"},
		{"exactly max_age", Session{ACR: "mfa", AMR: []string{"otp"}, AuthTime: at(5 * time.Minute)}, mfa, ""},
		{"max_age plus skew", Session{ACR: "mfa", AMR: []string{"otp"}, AuthTime: at(5*time.Minute + 5*time.Second)}, mfa, ""},
		{"past max_age and skew", Session{ACR: "mfa", AMR: []string{"otp"}, AuthTime: at(5*time.Minute + 6*time.Second)}, mfa, "max_age"},
		{"no auth_time", Session{ACR: "mfa", AMR: []string{"otp"}}, mfa, "max_age"},
		{"IdP clock a little ahead", Session{ACR: "mfa", AMR: []string{"otp"}, AuthTime: at(-3 * time.Second)}, mfa, ""},
		{"auth_time in the future", Session{ACR: "mfa", AMR: []string{"otp"}, AuthTime: at(-time.Hour)}, mfa, "max_age"},
		{"auth_time 6 s ahead", Session{ACR: "mfa", AMR: []string{"otp"}, AuthTime: at(-6 * time.Second)}, mfa, "max_age"},
		{"no max_age: any age", Session{ACR: "mfa", AMR: []string{"otp"}, AuthTime: at(100 * time.Hour)}, Requirement{ACR: []string{"mfa"}}, ""},
		{"never verified", Session{ACR: "mfa"}, Requirement{Provider: "eid"}, "verification"},
		{"verified", Session{Verifications: map[string]Verification{"eid": {ACR: "high", AuthTime: at(time.Minute)}}},
			Requirement{Provider: "eid", ACR: []string{"high"}, MaxAge: time.Hour}, ""},
		{"verification too old", Session{Verifications: map[string]Verification{"eid": {ACR: "high", AuthTime: at(2 * time.Hour)}}},
			Requirement{Provider: "eid", ACR: []string{"high"}, MaxAge: time.Hour}, "max_age"},
	}
	for _, c := range cases {
		if got := c.r.Unmet(&c.s, now); got != c.want {
			t.Errorf("%s: Unmet = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestAcceptStepUp(t *testing.T) {
	started := time.Unix(1_800_000_000, 0)
	now := started.Add(20 * time.Second)
	r := Requirement{ACR: []string{"mfa"}, AMR: []string{"otp"}, MaxAge: 5 * time.Minute}
	cases := []struct {
		name string
		id   Identity
		want string
	}{
		{"fresh and strong", Identity{ACR: "mfa", AMR: []string{"pwd", "otp"}, AuthTime: started.Add(10 * time.Second).Unix()}, ""},
		{"IdP clock 4s behind", Identity{ACR: "mfa", AMR: []string{"otp"}, AuthTime: started.Add(-4 * time.Second).Unix()}, ""},
		{"weaker acr", Identity{ACR: "pwd", AMR: []string{"otp"}, AuthTime: started.Unix()}, "weaker_acr"},
		{"no otp", Identity{ACR: "mfa", AMR: []string{"pwd"}, AuthTime: started.Unix()}, "missing_amr"},
		{"the old login, ignored prompt", Identity{ACR: "mfa", AMR: []string{"otp"}, AuthTime: started.Add(-time.Minute).Unix()}, "stale_auth_time"},
		{"no auth_time", Identity{ACR: "mfa", AMR: []string{"otp"}}, "stale_auth_time"},
		// A future auth_time would keep the step-up fresh past max_age.
		{"auth_time an hour ahead", Identity{ACR: "mfa", AMR: []string{"otp"}, AuthTime: now.Add(time.Hour).Unix()}, "stale_auth_time"},
		{"auth_time 6 s ahead", Identity{ACR: "mfa", AMR: []string{"otp"}, AuthTime: now.Add(6 * time.Second).Unix()}, "stale_auth_time"},
		{"auth_time 4 s ahead", Identity{ACR: "mfa", AMR: []string{"otp"}, AuthTime: now.Add(4 * time.Second).Unix()}, ""},
	}
	for _, c := range cases {
		err := AcceptStepUp(&c.id, r, started, now)
		var le *LoginError
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (!errors.As(err, &le) || le.Reason != c.want):
			t.Errorf("%s: err = %v, want %s", c.name, err, c.want)
		}
	}
	// An acr-only rule still needs a fresh login.
	if err := AcceptStepUp(&Identity{ACR: "mfa", AuthTime: started.Add(-time.Hour).Unix()}, Requirement{ACR: []string{"mfa"}}, started, now); err == nil {
		t.Error("an hour-old login was accepted as a step-up")
	}
}
