package policies

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// Shadow evaluates a candidate policy beside the serving one, on live
// traffic, without enforcing it and without slowing the request: the
// request path only copies its input into a bounded queue (Submit, which
// never blocks: a full queue drops the job, and counts it), and one or
// two workers decide the candidate's decision and hand it, with the job,
// to the job's ShadowReporter. The candidate is an Engine like the
// serving policy's: watched, hot-reloaded, with its own decision cache.
type Shadow struct {
	engine *Engine
	jobs   chan ShadowJob
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	evaluated, dropped atomic.Uint64
}

// DefaultShadowQueue is how many requests may wait for the candidate.
// A job holds a copy of the input (about 600 bytes, and the slices and
// maps it shares with the request's), so the queue holds well under a
// megabyte.
const DefaultShadowQueue = 1024

// ShadowJob is one request for the candidate: the input the serving
// policy decided, and what it decided.
type ShadowJob struct {
	// Input is a copy of the request's input (NewInput's are recycled
	// once the request is done). Its slices and maps are shared and
	// never written to.
	Input Input
	// Serving is the serving policy's decision, or ServingErr when it
	// could not decide (the request was denied with policy_error).
	Serving    Decision
	ServingErr error
	// ServingRevision and DecisionID name the request's decision line.
	ServingRevision string
	DecisionID      string
	// Report receives the candidate's decision.
	Report ShadowReporter
}

// ShadowReporter receives the candidate's decision for a job, on a
// shadow worker: it must not block for long.
type ShadowReporter interface {
	ShadowDecided(job *ShadowJob, candidate *Revision, d Decision, err error)
}

// NewShadow starts evaluating candidate's current revision for the jobs
// submitted, with a queue of queue jobs (DefaultShadowQueue when 0 or
// less) and workers goroutines (one on a machine of two cores or fewer,
// else two, when 0 or less). Close stops them and the engine.
func NewShadow(candidate *Engine, queue, workers int) *Shadow {
	if queue <= 0 {
		queue = DefaultShadowQueue
	}
	if workers <= 0 {
		workers = 1
		if runtime.GOMAXPROCS(0) > 2 {
			workers = 2
		}
	}
	s := &Shadow{engine: candidate, jobs: make(chan ShadowJob, queue), stop: make(chan struct{})}
	s.wg.Add(workers)
	for range workers {
		go s.work()
	}
	return s
}

// Engine is the candidate's engine.
func (s *Shadow) Engine() *Engine { return s.engine }

// Submit queues a job for the candidate and reports whether it was
// queued. It never blocks: when the queue is full (the candidate cannot
// keep up), the job is dropped and counted. The job is copied.
func (s *Shadow) Submit(job *ShadowJob) bool {
	select {
	case s.jobs <- *job:
		return true
	default:
		s.dropped.Add(1)
		return false
	}
}

// ShadowStats counts a shadow's jobs since it started.
type ShadowStats struct {
	Evaluated, Dropped uint64
	Queued             int // waiting now
}

// Stats reports the jobs evaluated and dropped so far.
func (s *Shadow) Stats() ShadowStats {
	return ShadowStats{Evaluated: s.evaluated.Load(), Dropped: s.dropped.Load(), Queued: len(s.jobs)}
}

func (s *Shadow) work() {
	defer s.wg.Done()
	// One job the worker reuses: the reporter's interface call would move
	// a fresh one (about 600 bytes) to the heap for every request.
	job := new(ShadowJob)
	for {
		select {
		case <-s.stop:
			return
		case *job = <-s.jobs:
			s.evaluate(job)
			*job = ShadowJob{} // keep no request's data alive
		}
	}
}

// evaluate decides job's input with the candidate's current revision
// (through its decision cache; bounded by its timeout) and reports it.
// A panic here would end the process, not one request as on the request
// path: a candidate that panics is reported as an error instead, and a
// reporter that panics is logged.
func (s *Shadow) evaluate(job *ShadowJob) {
	rev := s.engine.Current()
	d, err := decideRecovered(rev, &job.Input)
	s.evaluated.Add(1)
	if job.Report == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			s.engine.logger.Error("policy shadow: reporting a candidate's decision panicked", zap.String("decision_id", job.DecisionID), zap.Any("panic", p))
		}
	}()
	job.Report.ShadowDecided(job, rev, d, err)
}

func decideRecovered(rev *Revision, in *Input) (d Decision, err error) {
	defer func() {
		if p := recover(); p != nil {
			d, err = Decision{}, fmt.Errorf("%w: the evaluation panicked: %v", ErrPolicy, p)
		}
	}()
	d, _, err = rev.DecideInput(context.Background(), in)
	return d, err
}

// Close stops the workers (jobs still queued are dropped, uncounted) and
// the candidate's engine.
func (s *Shadow) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		s.wg.Wait()
		err = s.engine.Close()
	})
	return err
}

// Destruct lets a Shadow live in a Caddy usage pool.
func (s *Shadow) Destruct() error { return s.Close() }

// ReadsBeyond reports whether r's decision can read a part of the input
// that NewInput leaves out for other (the query, the headers, the
// step-out verifications): the input built for other must then be built
// whole for r to see what it reads.
func (r *Revision) ReadsBeyond(other *Revision) bool {
	for _, f := range [...][2]string{{"request", "query"}, {"request", "headers"}, {"user", "verifications"}} {
		if r.Reads(f[0], f[1]) && !other.Reads(f[0], f[1]) {
			return true
		}
	}
	return false
}
