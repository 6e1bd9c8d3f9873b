package policies

import (
	"context"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// reloadDelay gathers the burst of events an editor or a deploy makes
// (write, rename, chmod…) into one reload.
const reloadDelay = 200 * time.Millisecond

// Engine serves the current Revision of a policy directory and reloads it
// when the directory changes. A change that does not load is refused with
// a log line; the last good revision keeps serving. The directory is
// watched, not single files, since editors and deploy tools replace files
// by rename.
type Engine struct {
	dir    string
	opts   Options
	logger *zap.Logger
	cur    atomic.Pointer[Revision]

	watcher *fsnotify.Watcher
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex // serialises reloads
	// Reload attempts that loaded (a new revision or the same one) and
	// that were refused; failing says the last one was refused.
	reloads, refused atomic.Uint64
	failing          atomic.Bool
	// onReload is called after every reload attempt (tests).
	onReload func(*Revision, error)
}

// NewEngine loads dir and starts watching it. The first load must
// succeed.
func NewEngine(dir string, opts Options, logger *zap.Logger) (*Engine, error) {
	opts.defaults()
	if logger == nil {
		logger = zap.NewNop()
	}
	rev, err := Load(context.Background(), dir, opts)
	if err != nil {
		return nil, err
	}
	e := &Engine{dir: dir, opts: opts, logger: logger, stop: make(chan struct{}), done: make(chan struct{})}
	e.cur.Store(rev)
	e.logLoaded(rev, "")
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	e.watcher = w
	e.watchTree()
	go e.loop()
	return e, nil
}

// Current returns the revision serving now.
func (e *Engine) Current() *Revision { return e.cur.Load() }

// Stats is what an engine has done since it started, for metrics and
// readiness.
type Stats struct {
	Revision string // serving now
	Reloads  uint64 // reloads that loaded (a changed or an unchanged policy)
	Refused  uint64 // reloads refused: the last good revision kept serving
	Failing  bool   // the last reload was refused
}

// Stats reports the serving revision and the reloads so far.
func (e *Engine) Stats() Stats {
	return Stats{Revision: e.cur.Load().ID, Reloads: e.reloads.Load(), Refused: e.refused.Load(), Failing: e.failing.Load()}
}

// Dir is the watched directory.
func (e *Engine) Dir() string { return e.dir }

// Close stops watching.
func (e *Engine) Close() error {
	select {
	case <-e.stop:
	default:
		close(e.stop)
	}
	err := e.watcher.Close()
	<-e.done
	return err
}

// Destruct lets an Engine live in a Caddy usage pool.
func (e *Engine) Destruct() error { return e.Close() }

// watchTree adds the directory and its subdirectories to the watcher.
func (e *Engine) watchTree() {
	// The walk itself never fails: unreadable entries are skipped.
	_ = filepath.WalkDir(e.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p != e.dir && (d.Name()[0] == '.' || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if err := e.watcher.Add(p); err != nil {
			e.logger.Warn("cannot watch policy directory", zap.String("dir", p), zap.Error(err))
		}
		return nil
	})
}

func (e *Engine) loop() {
	defer close(e.done)
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-e.stop:
			if timer != nil {
				timer.Stop()
			}
			return
		case ev, ok := <-e.watcher.Events:
			if !ok {
				return
			}
			if ev.Has(fsnotify.Create) {
				e.watchTree() // a new subdirectory
			}
			if timer == nil {
				timer = time.NewTimer(reloadDelay)
			} else {
				timer.Reset(reloadDelay)
			}
			fire = timer.C
		case err, ok := <-e.watcher.Errors:
			if !ok {
				return
			}
			e.logger.Warn("policy watcher", zap.Error(err))
		case <-fire:
			fire = nil
			e.Reload()
		}
	}
}

// Reload loads the directory now. A valid policy is swapped in
// atomically; an invalid one is refused and the current revision keeps
// serving. It returns the revision serving afterwards and the load error.
func (e *Engine) Reload() (*Revision, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	prev := e.cur.Load()
	rev, err := Load(context.Background(), e.dir, e.opts)
	if err != nil {
		e.refused.Add(1)
	} else {
		e.reloads.Add(1)
	}
	e.failing.Store(err != nil)
	switch {
	case err != nil:
		e.logger.Error("policy change refused; the last good revision keeps serving",
			zap.String("dir", e.dir), zap.String("revision", prev.ID), zap.Error(err))
		rev = prev
	case rev.ID == prev.ID:
		// Touched but unchanged.
	default:
		e.cur.Store(rev)
		e.logLoaded(rev, prev.ID)
	}
	if e.onReload != nil {
		e.onReload(rev, err)
	}
	return rev, err
}

func (e *Engine) logLoaded(rev *Revision, previous string) {
	e.logger.Info("policy loaded", zap.String("dir", e.dir), zap.String("revision", rev.ID),
		zap.String("previous", previous), zap.Strings("files", rev.Files), zap.String("query", e.opts.Query))
	for _, w := range rev.Warnings {
		e.logger.Warn("policy warning", zap.String("revision", rev.ID), zap.String("warning", w))
	}
}
