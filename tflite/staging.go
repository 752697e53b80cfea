package tflite

import (
	"context"
	"fmt"

	"github.com/edge-agent/edge-agent/errcode"
)

// Staging: a new version of a serving model is registered under its own
// id with ModelSpec.StagingOf set, warmed and checked there, then
// promoted (Promote) or dropped (Unregister). Until then the two protect
// each other: making room for the staged version never evicts the one it
// replaces, and the staged version, warm and checked, is evicted only to
// make room for the serving version's own requests (Promote then refuses
// it as cold, and the caller checks it again). When both do not fit,
// Drain empties the serving version so the new one can be checked alone.

// ErrCold: Promote was given a staged version that is no longer warm.
var ErrCold = errcode.New("model_cold", "the staged version is not warm")

// protectedLocked reports whether e must stay warm while the pool makes
// room for except (nil: for no model in particular, such as a trim).
func protectedLocked(e, except *entry) bool {
	if except != nil && except.spec.StagingOf != "" && except.spec.StagingOf == e.spec.ID {
		return true // the serving version of what is being staged
	}
	if e.spec.StagingOf == "" {
		return false
	}
	return except == nil || except.spec.ID != e.spec.StagingOf
}

// Version is ModelSpec.Version of the model this lease's interpreter
// belongs to: after a Promote, a lease taken before it still names the
// old version.
func (l *Lease) Version() string {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	return l.e.spec.Version
}

// Drain prepares a model's update when only one version fits: new
// requests for id wait (they are not refused), the leases and the load in
// flight finish within ctx, and then its interpreters and mapping are
// freed, pinned or not. resume lets the waiting requests load id again
// (the update was refused); Promote hands them to the new version instead.
// When ctx ends first, the model serves again and Drain returns ctx's error.
func (p *Pool) Drain(ctx context.Context, id string) (resume func(), err error) {
	p.mu.Lock()
	e, ok := p.entries[id]
	if !ok {
		p.mu.Unlock()
		return nil, &Error{Op: "drain " + id, Kind: ErrUnknownModel}
	}
	if e.held {
		p.mu.Unlock()
		return nil, &Error{Op: "drain " + id, Kind: ErrBusy, Detail: "already drained"}
	}
	e.held = true
	resume = func() {
		p.mu.Lock()
		e.held = false
		p.broadcastLocked(e)
		p.unlockAndNotify()
	}
	for e.leased > 0 || e.growing > 0 || e.loading {
		ch := e.changed
		e.waiters++ // so that a release broadcasts
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		p.mu.Lock()
		e.waiters--
		if ctx.Err() != nil {
			p.mu.Unlock()
			resume()
			return nil, fmt.Errorf("drain %q: %w", id, ctx.Err())
		}
	}
	if e.model != nil {
		p.evictLocked(e, "update")
	}
	p.unlockAndNotify()
	return resume, nil
}
