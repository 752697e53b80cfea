package update

import (
	"context"
	"sync"
)

// keeper tracks the rollback copies a start keeps after it accepts
// requests: the copy's fsync and the versions record write are not needed
// for a first answer, so a start serves the model from its unsynced copy
// and keeps the version on an owned goroutine (Manager.KeepLater).
//
// An update or rollback of a model waits for that model's keep first
// (wait): the versions record then names the serving version as current
// before the update records it as previous, and its copy exists. When the
// file at the path changed before the copy was made, the copy is refused
// (its digest differs) and that version cannot be rolled back to, as when
// a copy fails.
//
// A keep first waits until requests leave the pool alone (quiet): its
// fsyncs and the record's commit would otherwise run beside the first
// requests' loads and invokes. Whoever waits for a keep hurries it: it
// then runs at once.
type keeper struct {
	// mu guards busy.
	mu sync.Mutex
	// busy holds, by model id, the keep under way.
	busy map[string]*keepRun
	// quiet, when set, returns once requests leave the pool alone, or
	// when its ctx is done.
	quiet func(ctx context.Context) error
	// before, when set, runs before a model's version is kept (tests).
	before func(model string)
}

// keepRun is one keep under way: done is closed when it is over; hurry
// (under the keeper's mu) cancels its wait for quiet, and prev's (the
// keep of the same model begun before it, which it runs after).
type keepRun struct {
	done    chan struct{}
	hurried context.Context
	cancel  context.CancelFunc
	prev    *keepRun
}

func (r *keepRun) hurry() {
	for ; r != nil; r = r.prev {
		r.cancel()
	}
}

func newKeeper(quiet func(context.Context) error, before func(model string)) *keeper {
	return &keeper{busy: map[string]*keepRun{}, quiet: quiet, before: before}
}

// begin marks model id's keep as under way: it runs after the one begun
// before (prev); end marks it done.
func (k *keeper) begin(id string) (run *keepRun, end func()) {
	run = &keepRun{done: make(chan struct{})}
	run.hurried, run.cancel = context.WithCancel(context.Background())
	k.mu.Lock()
	run.prev = k.busy[id]
	k.busy[id] = run
	k.mu.Unlock()
	return run, func() {
		k.mu.Lock()
		if k.busy[id] == run {
			delete(k.busy, id)
		}
		run.prev = nil // hurry walks the chain under mu
		k.mu.Unlock()
		run.cancel()
		close(run.done)
	}
}

// wait hurries model id's keep under way, if any, and returns once it is
// done, or ctx is done.
func (k *keeper) wait(ctx context.Context, id string) error {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	run := k.busy[id]
	if run != nil {
		run.hurry()
	}
	k.mu.Unlock()
	if run == nil {
		return nil
	}
	select {
	case <-run.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keep runs fn (the sync and the record) for model id on a goroutine
// spawn owns, once requests leave the pool alone or someone waits for it;
// wait sees it from now on. When the agent stops, fn still runs: what
// was served is kept.
func (k *keeper) keep(spawn func(func(context.Context)), id string, fn func()) {
	run, end := k.begin(id)
	prev := run.prev
	spawn(func(ctx context.Context) {
		defer end()
		if k.quiet != nil {
			qctx, cancel := context.WithCancel(ctx)
			stop := context.AfterFunc(run.hurried, cancel)
			_ = k.quiet(qctx) // an error: hurried or stopping; keep now
			stop()
			cancel()
		}
		if prev != nil {
			<-prev.done // the records in the order the versions served
		}
		if k.before != nil {
			k.before(id)
		}
		fn()
	})
}
