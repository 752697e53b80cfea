package update

import (
	"context"
	"fmt"
	"strings"

	"github.com/edge-agent/edge-agent/agent/observe"
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

// guard starts watching model id's first requests after the update
// from → to.
func (m *Manager) guard(id, from, to string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.outcomes[outcomeKey(id, from)]
	m.guards[id] = &updateGuard{from: from, to: to, oldRate: old.rate()}
	for k := range m.outcomes {
		if strings.HasPrefix(k, id+"@") && k != outcomeKey(id, from) {
			delete(m.outcomes, k) // versions before from
		}
	}
	m.outcomes[outcomeKey(id, to)] = &outcomes{}
}

// noteOutcome records whether a request that version of model id answered
// failed; an update whose first requests fail clearly more often than its
// previous version's did is rolled back (updates.auto_rollback). It
// returns the rollback's reason ("" when none is due).
func (m *Manager) noteOutcome(id, version string, failed bool) string {
	set := m.settings()
	window := set.RollbackWindow
	key := outcomeKey(id, version)
	m.mu.Lock()
	o := m.outcomes[key]
	if o == nil {
		o = &outcomes{}
		m.outcomes[key] = o
	}
	o.add(failed, window)
	g := m.guards[id]
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
			delete(m.guards, id)
		} else if g.n >= window {
			delete(m.guards, id)
		}
		if m.guards[id] == nil {
			delete(m.outcomes, outcomeKey(id, g.from))
		}
	}
	m.mu.Unlock()
	if reason == "" || !set.AutoRollback {
		return reason
	}
	var run context.Context
	if m.o.RunCtx != nil {
		run = m.o.RunCtx()
	}
	if run == nil {
		return reason // not started: nothing serves to roll back
	}
	m.o.Spawn(run, func(ctx context.Context) {
		if _, err := m.Rollback(ctx, id, reason); err != nil {
			m.log.Error("automatic rollback failed", "model", id, "err", err)
		}
	})
	return reason
}

// RequestDone feeds the update guard (per-version outcomes, for the
// automatic rollback) and the parity ring (recent requests replayed
// through a staged update) from every request the routed model ran.
func (m *Manager) RequestDone(d observe.RequestDone) {
	if d.Stage == observe.StageLoad {
		return
	}
	m.noteOutcome(d.Model, d.Version, d.Stage == observe.StageRun)
	if d.Ran() {
		m.recordParity(d.Model, d.Version, d.Image, d.Tensor, d.Result)
	}
}
