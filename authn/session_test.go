package authn

import (
	"testing"
	"time"
)

func TestLifetimesCheck(t *testing.T) {
	l := Lifetimes{Idle: 15 * time.Minute, Lifetime: 12 * time.Hour}
	t0 := time.Unix(1_764_000_000, 0)
	s := func(created, lastSeen time.Duration) *Session {
		return &Session{ID: "x", Subject: "a", Created: t0.Add(created).Unix(), LastSeen: t0.Add(lastSeen).Unix()}
	}
	cases := []struct {
		name string
		s    *Session
		now  time.Time
		want Reason
	}{
		{"fresh", s(0, 0), t0, ReasonNone},
		{"active", s(0, 10*time.Minute), t0.Add(20 * time.Minute), ReasonNone},
		{"idle just under", s(0, 0), t0.Add(15*time.Minute - time.Second), ReasonNone},
		{"idle reached", s(0, 0), t0.Add(15 * time.Minute), ReasonIdle},
		{"lifetime reached though active", s(0, 12*time.Hour-time.Minute), t0.Add(12 * time.Hour), ReasonLifetime},
		{"created in the future", s(time.Hour, time.Hour), t0, ReasonClock},
		{"last seen before created", s(time.Minute, 0), t0.Add(2 * time.Minute), ReasonClock},
		{"tombstone", &Session{Ended: "logout", Created: t0.Unix(), LastSeen: t0.Unix()}, t0, ReasonLoggedOut},
	}
	for _, c := range cases {
		if got := l.Check(c.s, c.now); got != c.want {
			t.Errorf("%s: Check = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestSlideEvery(t *testing.T) {
	for idle, want := range map[time.Duration]time.Duration{
		15 * time.Minute: time.Minute,
		5 * time.Minute:  30 * time.Second,
		3 * time.Second:  time.Second,
		time.Hour:        time.Minute,
	} {
		if got := (Lifetimes{Idle: idle}).SlideEvery(); got != want {
			t.Errorf("SlideEvery(idle=%s) = %s, want %s", idle, got, want)
		}
	}
	l := Lifetimes{Idle: 15 * time.Minute, Lifetime: time.Hour}
	s := &Session{LastSeen: 1000}
	if l.ShouldSlide(s, time.Unix(1059, 0)) {
		t.Error("slid within a minute")
	}
	if !l.ShouldSlide(s, time.Unix(1060, 0)) {
		t.Error("did not slide after a minute")
	}
}

func TestForcesReauthentication(t *testing.T) {
	for r, want := range map[Reason]bool{
		ReasonIdle: true, ReasonLifetime: true, ReasonLoggedOut: true,
		ReasonNoCookie: false, ReasonInvalid: false, ReasonClock: false,
	} {
		if got := r.ForcesReauthentication(); got != want {
			t.Errorf("%s.ForcesReauthentication() = %v, want %v", r, got, want)
		}
	}
}
