package tflite

// Eviction: which warm model leaves when the budget is short, and the
// frees that follow. Everything here runs under Pool.mu; the C frees and
// munmaps it queues run once mu is released (unlockAndNotify).

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Policy chooses which warm model to evict when the budget is short.
type Policy int

const (
	// CostAware evicts the model whose warmth is worth least: decayed
	// demand × cold-start time saved, per byte held.
	CostAware Policy = iota
	// LRU evicts the least recently used model; kept as a baseline for
	// benchmarks.
	LRU
	// GDSF is Greedy-Dual-Size-Frequency (as in FaasCache, ASPLOS'21): a
	// model's priority is the pool's clock when it was last requested plus
	// decayed demand × cold-start time saved per byte; the lowest leaves,
	// and the clock rises to each evicted priority, so popularity that
	// stopped ages out instead of holding memory for ever.
	GDSF
)

// ParsePolicy reads a policy name: "cost" (CostAware), "lru" or "gdsf".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "", "cost":
		return CostAware, nil
	case "lru":
		return LRU, nil
	case "gdsf":
		return GDSF, nil
	}
	return 0, fmt.Errorf("eviction policy %q: want cost, lru or gdsf", s)
}

// errWaitForRelease means the budget is short only while other models are
// busy: room appears when a lease is released.
var errWaitForRelease = errors.New("wait for a release")

// makeRoomLocked evicts until need more bytes fit the budget.
func (p *Pool) makeRoomLocked(need int64, except *entry) error {
	budget := p.opts.Budget
	if budget <= 0 {
		return nil
	}
	op := "admit"
	if except != nil {
		op += " " + except.spec.ID
	}
	if need > budget {
		return &Error{Op: op, Kind: ErrOverBudget,
			Detail: fmt.Sprintf("needs %d bytes, budget is %d", need, budget)}
	}
	for p.bytes+need > budget {
		v, busy := p.victimLocked(except)
		if v == nil {
			if busy || p.reserved > 0 {
				return errWaitForRelease
			}
			return &Error{Op: op, Kind: ErrOverBudget,
				Detail: fmt.Sprintf("needs %d bytes, %d of %d held by pinned models", need, p.bytes, budget)}
		}
		p.evictLocked(v, "budget")
	}
	return nil
}

// victimLocked picks the evictable warm model worth least. busy reports
// whether an unpinned warm model was passed over because it is in use.
func (p *Pool) victimLocked(except *entry) (victim *entry, busy bool) {
	now := p.opts.Now()
	var bestScore float64
	for _, e := range p.entries {
		if e == except || e.model == nil || e.spec.Pinned {
			continue
		}
		// Only a lease or the load in flight pins a model in memory: a
		// waiter or a warm-up still queued copes with finding it cold.
		if e.leased > 0 || e.loading {
			busy = true
			continue
		}
		var score float64
		switch p.opts.Policy {
		case LRU:
			score = float64(e.lastUsed.UnixNano())
		case GDSF:
			score = e.clockAt + p.worthLocked(e, now)
		default:
			score = p.valueLocked(e, now)
		}
		if victim == nil || score < bestScore || (score == bestScore && e.lastUsed.Before(victim.lastUsed)) {
			victim, bestScore = e, score
		}
	}
	return victim, busy
}

// valueLocked is the cost-aware worth of keeping e warm: expected requests
// (decayed count, with a floor so unrequested prewarms still rank by cost)
// times the seconds each saves, per byte held.
func (p *Pool) valueLocked(e *entry, now time.Time) float64 {
	d := e.demand * p.decay(now.Sub(e.demandAt))
	return (d + 0.05) * max(e.cold.Seconds(), 1e-6) / float64(max(e.bytes, 1))
}

// worthLocked is GDSF's frequency × cost / size term, in seconds saved
// per MiB held (the unit only matters against the clock, which is made
// of the same terms).
func (p *Pool) worthLocked(e *entry, now time.Time) float64 {
	d := e.demand * p.decay(now.Sub(e.demandAt))
	return d * max(e.cold.Seconds(), 1e-6) / (float64(max(e.bytes, 1)) / (1 << 20))
}

func (p *Pool) decay(age time.Duration) float64 {
	if age <= 0 {
		return 1
	}
	return math.Exp2(-float64(age) / float64(p.opts.HalfLife))
}

func (p *Pool) noteDemandLocked(e *entry) {
	now := p.opts.Now()
	p.lastDemand = now
	e.demand = e.demand*p.decay(now.Sub(e.demandAt)) + 1
	e.clockAt = p.clock
	e.demandAt = now
}

// evictLocked frees an idle warm model entirely.
func (p *Pool) evictLocked(e *entry, reason string) {
	if p.opts.Policy == GDSF && reason == "budget" {
		p.clock = max(p.clock, e.clockAt+p.worthLocked(e, p.opts.Now()))
	}
	freed := e.bytes
	p.freeIdleLocked(e)
	p.stats.Evictions++
	p.log.Debug("model evicted", "model", e.spec.ID, "bytes", freed, "reason", reason)
	if cb := p.opts.OnEvict; cb != nil {
		ev := EvictEvent{ModelID: e.spec.ID, Bytes: freed, Reason: reason}
		p.events = append(p.events, func() { cb(ev) })
	}
	p.broadcastLocked(e)
}

// freeIdleLocked frees e's idle interpreters, and its model once no
// interpreter is left, returning their bytes to the budget.
func (p *Pool) freeIdleLocked(e *entry) {
	for _, it := range e.idle {
		p.dropInterpreterLocked(e, it)
	}
	e.idle = nil
	p.closeModelIfUnusedLocked(e)
}

// dropInterpreterLocked takes it out of the accounting; the C free runs
// once mu is released (TfLiteInterpreterDelete can take milliseconds).
func (p *Pool) dropInterpreterLocked(e *entry, it instance) {
	h := e.heaps[it]
	delete(e.heaps, it)
	delete(e.gens, it)
	delete(e.unmeasured, it)
	e.bytes -= h
	p.bytes -= h
	p.events = append(p.events, it.Close)
	p.freedC = true
}

// closeModelIfUnusedLocked unmaps e's model once nothing uses it; the
// munmap runs once mu is released, after the interpreters queued before it.
func (p *Pool) closeModelIfUnusedLocked(e *entry) {
	if e.model == nil || e.leased > 0 || len(e.idle) > 0 || e.loading {
		return
	}
	m, id := e.model, e.spec.ID
	p.events = append(p.events, func() {
		if err := m.Close(); err != nil {
			p.log.Error("close model", "model", id, "err", err)
		}
	})
	p.freedC = true
	p.bytes -= e.bytes // the mapping
	e.bytes = 0
	e.model = nil
}

// Evict frees a warm model now. Pinned and leased models are refused.
func (p *Pool) Evict(id string) error {
	p.mu.Lock()
	e, ok := p.entries[id]
	switch {
	case !ok:
		p.mu.Unlock()
		return &Error{Op: "evict " + id, Kind: ErrUnknownModel}
	case e.spec.Pinned:
		p.mu.Unlock()
		return &Error{Op: "evict " + id, Kind: ErrPinned}
	case e.leased > 0 || e.loading:
		p.mu.Unlock()
		return &Error{Op: "evict " + id, Kind: ErrBusy}
	case e.model == nil:
		p.mu.Unlock()
		return nil
	}
	p.evictLocked(e, "requested")
	p.unlockAndNotify()
	return nil
}

// SetBudget changes the budget, evicting what no longer fits. Pinned and
// busy models stay; the error says so when they alone exceed it.
func (p *Pool) SetBudget(budget int64) error {
	p.mu.Lock()
	p.opts.Budget = budget
	var err error
	if budget > 0 {
		for p.bytes > budget {
			v, _ := p.victimLocked(nil)
			if v == nil {
				err = &Error{Op: "set budget", Kind: ErrOverBudget,
					Detail: fmt.Sprintf("%d bytes held by pinned or busy models exceed %d", p.bytes, budget)}
				break
			}
			p.evictLocked(v, "budget")
		}
	}
	p.unlockAndNotify()
	return err
}

// ShrinkTo evicts idle unpinned models, least valuable first, until the
// pool holds at most target bytes (memory pressure: the budget stays). It
// returns how many models it evicted.
func (p *Pool) ShrinkTo(target int64, reason string) int {
	p.mu.Lock()
	n := 0
	for p.bytes > target {
		v, _ := p.victimLocked(nil)
		if v == nil {
			break
		}
		p.evictLocked(v, reason)
		n++
	}
	p.unlockAndNotify()
	return n
}

// Trim frees the idle interpreters of models unused for idleFor, pinned
// models excepted, and returns how many it freed. With keepMapping the
// model stays mapped (a later request skips the map stage) while that fits
// the budget; otherwise the model is evicted whole.
func (p *Pool) Trim(idleFor time.Duration, keepMapping bool) int {
	p.mu.Lock()
	now := p.opts.Now()
	freed := 0
	for _, e := range p.entries {
		if e.spec.Pinned || e.model == nil || e.leased > 0 || e.loading || len(e.idle) == 0 || now.Sub(e.lastUsed) < idleFor {
			continue
		}
		freed += len(e.idle)
		if keepMapping {
			for _, it := range e.idle {
				p.dropInterpreterLocked(e, it)
			}
			e.idle = nil
			p.broadcastLocked(e)
			continue
		}
		p.evictLocked(e, "idle")
	}
	p.unlockAndNotify()
	return freed
}
