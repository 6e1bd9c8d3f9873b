package policies

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// reporterFunc adapts a function to ShadowReporter.
type reporterFunc func(job *ShadowJob, rev *Revision, d Decision, err error)

func (f reporterFunc) ShadowDecided(job *ShadowJob, rev *Revision, d Decision, err error) {
	f(job, rev, d, err)
}

func shadowEngine(t testing.TB, policy string) *Engine {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestShadowQueueIsBoundedAndNeverBlocks: with the workers stuck, the
// queue takes as many jobs as it holds (and one per worker), every
// further Submit returns at once having dropped and counted its job, and
// once the workers go on every queued job is evaluated and reported.
func TestShadowQueueIsBoundedAndNeverBlocks(t *testing.T) {
	const queue, workers, submitted = 8, 2, 100
	s := NewShadow(shadowEngine(t, denyPolicy), queue, workers)
	t.Cleanup(func() { _ = s.Close() })
	release := make(chan struct{})
	var mu sync.Mutex
	var got []string
	done := make(chan struct{}, submitted)
	report := reporterFunc(func(job *ShadowJob, rev *Revision, d Decision, err error) {
		<-release
		mu.Lock()
		got = append(got, job.DecisionID)
		mu.Unlock()
		if err != nil || d.Allow || d.Reason != "B" || rev.ID == "" {
			t.Errorf("the candidate decided %+v, %v; want its deny", d, err)
		}
		done <- struct{}{}
	})
	in := Input{App: "a", User: User{Sub: "alice", Groups: []string{"staff"}}}
	start := time.Now()
	accepted := 0
	for i := range submitted {
		job := ShadowJob{Input: in, Serving: Decision{Allow: true}, DecisionID: string(rune('A' + i)), Report: report}
		if s.Submit(&job) {
			accepted++
		}
	}
	took := time.Since(start)
	if accepted < queue || accepted > queue+workers {
		t.Errorf("%d jobs queued, want %d to %d (the queue and one per worker)", accepted, queue, queue+workers)
	}
	st := s.Stats()
	if st.Dropped != uint64(submitted-accepted) {
		t.Errorf("dropped %d, want %d", st.Dropped, submitted-accepted)
	}
	// 100 Submits against a stuck queue take microseconds; a blocking
	// one would wait for the release below, forever.
	if took > time.Second {
		t.Errorf("submitting took %s: Submit blocks", took)
	}
	close(release)
	for range accepted {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d queued jobs were reported", len(got), accepted)
		}
	}
	if st := s.Stats(); st.Evaluated != uint64(accepted) || st.Queued != 0 {
		t.Errorf("stats %+v, want %d evaluated and none queued", st, accepted)
	}
	// The jobs kept their own copies: each reported its own id, once.
	slices.Sort(got)
	if len(slices.Compact(got)) != accepted {
		t.Errorf("reported ids %q", got)
	}
}

// TestShadowSurvivesAPanic: a panic on a worker would end the process:
// an evaluation that panics is reported as a candidate error, a reporter
// that panics is logged, and the worker goes on.
func TestShadowSurvivesAPanic(t *testing.T) {
	s := NewShadow(shadowEngine(t, allowPolicy), 4, 1)
	t.Cleanup(func() { _ = s.Close() })
	reported := make(chan string, 2)
	report := reporterFunc(func(job *ShadowJob, rev *Revision, d Decision, err error) {
		if job.DecisionID == "panics" {
			panic("reporter bug")
		}
		reported <- job.DecisionID
	})
	for _, id := range []string{"panics", "second"} {
		if !s.Submit(&ShadowJob{DecisionID: id, Report: report}) {
			t.Fatal("not queued")
		}
	}
	select {
	case id := <-reported:
		if id != "second" {
			t.Errorf("reported %s", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the worker stopped after a panic")
	}
	if d, err := decideRecovered(nil, &Input{}); err == nil || !errors.Is(err, ErrPolicy) || d.Allow {
		t.Errorf("a panicking evaluation: %+v, %v; want a policy error", d, err)
	}
}

// TestShadowCloseStopsWorkers: Close returns once the workers have
// stopped, and a Submit after it still never blocks.
func TestShadowCloseStopsWorkers(t *testing.T) {
	s := NewShadow(shadowEngine(t, allowPolicy), 2, 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	for range 10 {
		s.Submit(&ShadowJob{})
	}
	if st := s.Stats(); st.Dropped != 8 {
		t.Errorf("after Close, %+v: want the queue's 2 kept and 8 dropped", st)
	}
}

func TestCompare(t *testing.T) {
	mfa := &StepUp{ACR: []string{"mfa"}, MaxAge: 5 * time.Minute}
	mfaAgain := &StepUp{ACR: []string{"mfa"}, MaxAge: 5 * time.Minute}
	fresher := &StepUp{ACR: []string{"mfa"}, MaxAge: time.Minute}
	offer := &GrantOffer{Resource: "r", MaxDuration: time.Hour}
	boom := errors.New("boom")
	for _, c := range []struct {
		name                string
		serving, candidate  Decision
		servingErr, candErr error
		want                []Change
	}{
		{"same allow", Decision{Allow: true}, Decision{Allow: true}, nil, nil, nil},
		{"same deny", Decision{Reason: "x"}, Decision{Reason: "x"}, nil, nil, nil},
		{"allow to deny", Decision{Allow: true}, Decision{Reason: "no"}, nil, nil, []Change{ChangeAllowToDeny}},
		{"deny to allow, nothing else named", Decision{Reason: "no", RequestGrant: offer}, Decision{Allow: true, StepUp: mfa}, nil, nil, []Change{ChangeDenyToAllow}},
		{"step-up added", Decision{Allow: true}, Decision{Allow: true, StepUp: mfa}, nil, nil, []Change{ChangeStepUpAdded}},
		{"step-up removed", Decision{Allow: true, StepUp: mfa}, Decision{Allow: true}, nil, nil, []Change{ChangeStepUpRemoved}},
		{"step-up changed", Decision{Allow: true, StepUp: mfa}, Decision{Allow: true, StepUp: fresher}, nil, nil, []Change{ChangeStepUpChanged}},
		{"equal step-ups", Decision{Allow: true, StepUp: mfa}, Decision{Allow: true, StepUp: mfaAgain}, nil, nil, nil},
		{"acr order does not matter", Decision{Allow: true, StepUp: &StepUp{ACR: []string{"a", "b"}}}, Decision{Allow: true, StepUp: &StepUp{ACR: []string{"b", "a"}}}, nil, nil, nil},
		{"headers", Decision{Allow: true, Headers: map[string]string{"X-Role": "user"}}, Decision{Allow: true, Headers: map[string]string{"X-Role": "admin"}}, nil, nil, []Change{ChangeHeadersChanged}},
		{"step-up and headers", Decision{Allow: true}, Decision{Allow: true, StepUp: mfa, Headers: map[string]string{"X-Role": "admin"}}, nil, nil, []Change{ChangeStepUpAdded, ChangeHeadersChanged}},
		{"reason", Decision{Reason: "a"}, Decision{Reason: "b"}, nil, nil, []Change{ChangeReasonChanged}},
		{"offer added", Decision{Reason: "a"}, Decision{Reason: "a", RequestGrant: offer}, nil, nil, []Change{ChangeOfferChanged}},
		{"offer longer", Decision{Reason: "a", RequestGrant: offer}, Decision{Reason: "a", RequestGrant: &GrantOffer{Resource: "r", MaxDuration: 2 * time.Hour}}, nil, nil, []Change{ChangeOfferChanged}},
		{"a deny's reason and offer", Decision{Reason: "a"}, Decision{Reason: "b", RequestGrant: offer}, nil, nil, []Change{ChangeReasonChanged, ChangeOfferChanged}},
		{"candidate error", Decision{Allow: true}, Decision{}, nil, boom, []Change{ChangeCandidateError}},
		{"candidate error on a deny", Decision{Reason: "a"}, Decision{}, nil, boom, []Change{ChangeCandidateError}},
		{"both errors agree", Decision{}, Decision{}, boom, boom, nil},
		{"serving error, candidate allows", Decision{}, Decision{Allow: true}, boom, nil, []Change{ChangeDenyToAllow}},
		{"serving error, candidate denies", Decision{}, Decision{Reason: "a"}, boom, nil, []Change{ChangeReasonChanged}},
	} {
		if got := Compare(c.serving, c.servingErr, c.candidate, c.candErr); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// BenchmarkShadowSubmit is what the request path pays for the shadow
// policy: copying a realistic input and the serving decision into the
// queue. queued: into a queue with room (drained, without evaluating,
// every 1024 jobs; the receive is counted too); full: dropped and
// counted.
func BenchmarkShadowSubmit(b *testing.B) {
	in := realisticInput()
	dec := Decision{Allow: true, Headers: map[string]string{"X-Role": "member"}}
	job := func() ShadowJob {
		return ShadowJob{Input: *in, Serving: dec, ServingRevision: "88bc24a92efa", DecisionID: "26e4b879bce51339"}
	}
	b.Run("queued", func(b *testing.B) {
		s := &Shadow{jobs: make(chan ShadowJob, DefaultShadowQueue)}
		b.ReportAllocs()
		for b.Loop() {
			j := job()
			if !s.Submit(&j) {
				for len(s.jobs) > 0 {
					<-s.jobs
				}
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		s := &Shadow{jobs: make(chan ShadowJob)}
		b.ReportAllocs()
		for b.Loop() {
			j := job()
			if s.Submit(&j) {
				b.Fatal("queued")
			}
		}
	})
}
