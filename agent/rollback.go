package agent

import (
	"context"
	"fmt"
	"strings"
)

// outcomes is the recent request outcomes of one model: whether each of
// the last requests failed, newest last.
type outcomes struct {
	failed []bool
}

func (o *outcomes) add(failed bool, window int) {
	o.failed = append(o.failed, failed)
	if len(o.failed) > window {
		o.failed = o.failed[len(o.failed)-window:]
	}
}

func (o *outcomes) rate() float64 {
	if o == nil || len(o.failed) == 0 {
		return 0
	}
	n := 0
	for _, f := range o.failed {
		if f {
			n++
		}
	}
	return float64(n) / float64(len(o.failed))
}

// updateGuard watches the first requests after an update.
type updateGuard struct {
	from, to  string
	oldRate   float64 // the previous version's failure rate
	n, failed int
}

// rollbackMargin is how much more often than the previous version an
// update may fail its first requests before it is rolled back.
const rollbackMargin = 0.2

// outcomeKey: outcomes are counted per version of a model, so requests
// the old version answers after a swap never count against the new one.
func outcomeKey(id, version string) string { return id + "@" + version }

// guardUpdate starts watching model id's first requests after the update
// from → to.
func (a *Agent) guardUpdate(id, from, to string) {
	a.updMu.Lock()
	defer a.updMu.Unlock()
	old := a.outcomes[outcomeKey(id, from)]
	a.guards[id] = &updateGuard{from: from, to: to, oldRate: old.rate()}
	for k := range a.outcomes {
		if strings.HasPrefix(k, id+"@") && k != outcomeKey(id, from) {
			delete(a.outcomes, k) // versions before from
		}
	}
	a.outcomes[outcomeKey(id, to)] = &outcomes{}
}

// noteOutcome records whether a request that version of model id answered
// failed; an update whose first requests fail clearly more often than its
// previous version's did is rolled back (updates.auto_rollback). It
// returns the rollback's reason ("" when none is due).
func (a *Agent) noteOutcome(id, version string, failed bool) string {
	window := a.config().Updates.RollbackWindow
	key := outcomeKey(id, version)
	a.updMu.Lock()
	o := a.outcomes[key]
	if o == nil {
		o = &outcomes{}
		a.outcomes[key] = o
	}
	o.add(failed, window)
	g := a.guards[id]
	var reason string
	if g != nil && g.to == version {
		g.n++
		if failed {
			g.failed++
		}
		// Decided as soon as the failures alone put the window's rate over
		// the previous version's plus the margin, whatever the rest do.
		if rate := float64(g.failed) / float64(window); rate > g.oldRate+rollbackMargin {
			reason = fmt.Sprintf("auto: %d of its first %d requests failed (the previous version failed %.0f%%)", g.failed, g.n, 100*g.oldRate)
			delete(a.guards, id)
		} else if g.n >= window {
			delete(a.guards, id)
		}
		if a.guards[id] == nil {
			delete(a.outcomes, outcomeKey(id, g.from))
		}
	}
	a.updMu.Unlock()
	if reason == "" || !a.config().Updates.autoRollback() || a.runCtx == nil {
		return reason
	}
	a.spawn(a.runCtx, func(ctx context.Context) {
		if _, err := a.Rollback(ctx, id, reason); err != nil {
			a.log.Error("automatic rollback failed", "model", id, "err", err)
		}
	})
	return reason
}
