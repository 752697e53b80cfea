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
type keeper struct {
	// mu guards busy.
	mu sync.Mutex
	// busy holds, by model id, a channel closed when its keep is done.
	busy map[string]chan struct{}
	// before, when set, runs before a model's version is kept (tests).
	before func(model string)
}

func newKeeper(before func(model string)) *keeper {
	return &keeper{busy: map[string]chan struct{}{}, before: before}
}

// begin marks model id's keep as under way; end marks it done.
func (k *keeper) begin(id string) (end func()) {
	done := make(chan struct{})
	k.mu.Lock()
	prev := k.busy[id]
	k.busy[id] = done
	k.mu.Unlock()
	return func() {
		if prev != nil {
			<-prev // in the order begun
		}
		k.mu.Lock()
		if k.busy[id] == done {
			delete(k.busy, id)
		}
		k.mu.Unlock()
		close(done)
	}
}

// wait returns once no keep of model id is under way, or ctx is done.
func (k *keeper) wait(ctx context.Context, id string) error {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	done := k.busy[id]
	k.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keep runs fn (the sync and the record) for model id on a goroutine
// spawn owns; wait sees it from now on.
func (k *keeper) keep(spawn func(func(context.Context)), id string, fn func()) {
	end := k.begin(id)
	spawn(func(context.Context) {
		defer end()
		if k.before != nil {
			k.before(id)
		}
		fn()
	})
}
