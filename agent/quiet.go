package agent

import (
	"context"
	"time"
)

// Background work that guesses (the start's plan, a rescan's wake) waits
// until requests leave the pool alone: requests arriving say what is
// needed, and the guess's loads and warm-up invokes would otherwise share
// the cores with them. A trace of a first start showed the plan's load
// and warm-up invoke running beside the request's first invoke.

// quietBefore is how long nothing must have used the pool; quietWaitMax
// bounds the wait, so a device that is never quiet still runs the work.
const (
	quietBefore  = 50 * time.Millisecond
	quietWaitMax = 5 * time.Second
)

// waitQuiet returns once nothing has used the pool (pool.Busy: a lease, a
// wait, a load, a model being registered for a request) for quietBefore
// since the latest request or since, or after quietWaitMax.
func (a *Agent) waitQuiet(ctx context.Context, since time.Time) error {
	deadline := time.Now().Add(quietWaitMax)
	for {
		_, last := a.pool.Activity()
		if last.Before(since) {
			last = since
		}
		quiet := time.Since(last)
		if (quiet >= quietBefore && !a.pool.Busy()) || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(max(quietBefore-quiet, 10*time.Millisecond)):
		}
	}
}

// wakeWhenQuiet posts a wake once requests leave the pool alone: a
// rescan's new models are prewarmed then, not beside the request that may
// follow the rescan at once. Before Start it posts at once.
func (a *Agent) wakeWhenQuiet(source string) {
	if a.run.ctx == nil {
		a.PostWake(source)
		return
	}
	since := time.Now()
	a.run.spawn(a.run.ctx, func(ctx context.Context) {
		if a.waitQuiet(ctx, since) == nil {
			a.PostWake(source)
		}
	})
}
