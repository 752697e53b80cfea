package tflite

// Eviction: which warm model leaves when the budget is short (the Policy
// decides), keep-alive expiry, and the frees that follow. Everything here
// runs under Pool.mu; the C frees and munmaps it queues run on the pool's
// reaper once mu is released.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// errWaitForRelease means the budget is short only while other models are
// busy: room appears when a lease is released.
var errWaitForRelease = errors.New("wait for a release")

// errServeIdle means another interpreter of the model does not fit, and one
// it already has is idle: that one serves the request instead.
var errServeIdle = errors.New("serve from the idle interpreter")

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
	if except != nil && except.guessing {
		return p.makeRoomForGuessLocked(need, except)
	}
	for p.bytes+need > budget {
		v, busy := p.victimLocked(except, nil)
		if v == nil {
			if except != nil && len(except.idle) > 0 && !except.held {
				return errServeIdle
			}
			// The model's own leased interpreter counts as busy too: once
			// released it serves this request, with no second one needed.
			if busy || p.reserved > 0 || (except != nil && except.leased > 0) {
				return errWaitForRelease
			}
			return &Error{Op: op, Kind: ErrOverBudget, Detail: p.heldLocked(need, except)}
		}
		p.evictLocked(v, "budget")
	}
	return nil
}

// heldLocked says who holds the budget when nothing can be evicted for
// except: pinned models, the model itself (its mapping and its other
// interpreters), and a version being staged or its serving one. "Held
// by pinned models" alone read as wrong when the model itself held most.
func (p *Pool) heldLocked(need int64, except *entry) string {
	var pinned, self, kept int64
	for _, e := range p.entries {
		switch {
		case e == except:
			self = e.bytes
		case e.spec.Pinned:
			pinned += e.bytes
		default:
			kept += e.bytes
		}
	}
	d := fmt.Sprintf("needs %d bytes, %d of %d held: %d by pinned models", need, p.bytes, p.opts.Budget, pinned)
	if except != nil {
		d += fmt.Sprintf(", %d by %s itself", self, except.spec.ID)
	}
	if kept > 0 {
		d += fmt.Sprintf(", %d by versions being staged or served beside them", kept)
	}
	return d
}

// makeRoomForGuessLocked makes room for a due prewarm (a guess) only if
// the models it would evict, in the policy's order, are together expected
// to save under half the cold time the prewarmed model is: then they
// leave; otherwise nothing does. On slow storage a large model's reload
// takes seconds; a guess must not cost more than it can save.
func (p *Pool) makeRoomForGuessLocked(need int64, e *entry) error {
	now := p.opts.Now()
	limit := expectedSaving(p.expectedUseLocked(e, now)) / 2
	taken := map[*entry]bool{}
	var victims []*entry
	var freed int64
	spent := 0.0
	for p.bytes-freed+need > p.opts.Budget {
		v, _ := p.victimLocked(e, taken)
		if v == nil {
			return errNoRoomWorthIt
		}
		if spent += expectedSaving(p.useLocked(v, now)); spent > limit {
			return errNoRoomWorthIt
		}
		taken[v] = true
		victims = append(victims, v)
		freed += v.bytes
	}
	for _, v := range victims {
		p.evictLocked(v, "budget")
	}
	return nil
}

// expectedSaving is the cold time a model's warmth is expected to save:
// its decayed demand (with a floor) × its cold time.
func expectedSaving(u *Use) float64 { return (u.Demand + 0.05) * u.Cold.Seconds() }

// victimLocked picks the evictable warm model worth least, passing over
// except and skip. busy reports whether an unpinned warm model was passed
// over because it is in use.
func (p *Pool) victimLocked(except *entry, skip map[*entry]bool) (victim *entry, busy bool) {
	now := p.opts.Now()
	var bestScore float64
	for _, e := range p.entries {
		if e == except || e.model == nil || e.spec.Pinned || skip[e] || protectedLocked(e, except) {
			continue
		}
		// Only a lease or the load in flight pins a model in memory: a
		// waiter or a warm-up still queued copes with finding it cold.
		if e.leased > 0 || e.loading {
			busy = true
			continue
		}
		score := p.opts.Policy.Priority(p.useLocked(e, now))
		if victim == nil || score < bestScore || (score == bestScore && e.lastUsed.Before(victim.lastUsed)) {
			victim, bestScore = e, score
		}
	}
	return victim, busy
}

// useLocked is e's use as the policy sees it, as of now.
func (p *Pool) useLocked(e *entry, now time.Time) *Use {
	u := &e.use
	u.ID, u.Bytes, u.Cold, u.LastUsed, u.LastRequest, u.Now = e.spec.ID, e.bytes, e.cold, e.lastUsed, e.demandAt, now
	u.Load = e.cold + e.costs.steadyOr(e.spec.KnownSteady)
	u.Demand = e.demand * p.decay(now.Sub(e.demandAt))
	return u
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
	e.demandAt = now

	p.opts.Policy.Requested(p.useLocked(e, now))
}

// evictLocked frees an idle warm model entirely.
func (p *Pool) evictLocked(e *entry, reason string) {
	if reason == "budget" {
		p.opts.Policy.Evicted(p.useLocked(e, p.opts.Now()))
	}
	if o, ok := p.opts.Policy.(RewarmObserver); ok {
		o.Dropped(p.useLocked(e, p.opts.Now()))
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

// dropInterpreterLocked takes it out of the accounting; the C free runs on
// the reaper (TfLiteInterpreterDelete can take milliseconds).
func (p *Pool) dropInterpreterLocked(e *entry, it instance) {
	h := e.heaps[it]
	delete(e.heaps, it)
	delete(e.gens, it)
	delete(e.unmeasured, it)
	delete(e.fresh, it)
	e.bytes -= h
	p.bytes -= h
	p.frees = append(p.frees, it.Close)
	p.freedC = true
}

// closeModelIfUnusedLocked unmaps e's model once nothing uses it; the
// munmap runs on the reaper, after the interpreters queued before it.
func (p *Pool) closeModelIfUnusedLocked(e *entry) {
	if e.model == nil || e.leased > 0 || len(e.idle) > 0 || e.loading {
		return
	}
	m, id := e.model, e.spec.ID
	p.frees = append(p.frees, func() {
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
			v, _ := p.victimLocked(nil, nil)
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
		v, _ := p.victimLocked(nil, nil)
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
		if e.spec.Pinned || e.spec.StagingOf != "" || e.model == nil || e.leased > 0 || e.loading || len(e.idle) == 0 || now.Sub(e.lastUsed) < idleFor {
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

// Expire frees the idle, unpinned models the policy no longer keeps warm:
// past their keep-alive, or in the gap before their pre-warm window (the
// model is not expected yet: its memory serves others meanwhile). It
// returns how many it freed. Call it every second or so (the agent's
// keep-alive loop, the bench's replay).
func (p *Pool) Expire() int {
	p.mu.Lock()
	now := p.opts.Now()
	n := 0
	for _, e := range p.entries {
		if e.spec.Pinned || e.spec.StagingOf != "" || e.model == nil || e.leased > 0 || e.loading {
			continue
		}
		u := p.useLocked(e, now)
		w := p.opts.Policy.Window(u)
		since := now.Sub(lastRequestOrUse(u))
		switch {
		case w.KeepAlive > 0 && since >= w.KeepAlive:
			p.evictLocked(e, "keep-alive")
		case w.Rewarm && w.Prewarm > 0 && since < w.Prewarm && !e.demandAt.IsZero():
			p.evictLocked(e, "pre-warm gap")
		default:
			continue
		}
		n++
	}
	p.unlockAndNotify()
	return n
}

// DuePrewarms lists the cold models the policy wants warm now (their
// pre-warm window is open and no prewarm was tried since their last
// request), most valuable first. Warm them with PrewarmDue.
func (p *Pool) DuePrewarms() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.opts.Now()
	type due struct {
		id  string
		pri float64
	}
	var ds []due
	for _, e := range p.entries {
		if e.model != nil || e.growing > 0 || e.removed || e.demandAt.IsZero() || !e.prewarmedAt.Before(e.demandAt) {
			continue
		}
		u := p.expectedUseLocked(e, now)
		w := p.opts.Policy.Window(u)
		since := now.Sub(e.demandAt)
		if w.Rewarm && since >= w.Prewarm && (w.KeepAlive == 0 || since < w.KeepAlive) {
			ds = append(ds, due{e.spec.ID, p.opts.Policy.Priority(u)})
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].pri > ds[j].pri || (ds[i].pri == ds[j].pri && ds[i].id < ds[j].id) })
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.id
	}
	return ids
}

// PrewarmDue prewarms a model DuePrewarms listed, evicting only models
// expected to save under half what it will (makeRoomForGuessLocked): a
// guess about the future never displaces what is worth more, and two
// models of about the same worth do not displace each other in turn. loaded is false when it was warm already,
// when a load holds the slot (tried again later) or when there was no such
// room (then it is not tried again before its next request).
func (p *Pool) PrewarmDue(ctx context.Context, id string) (rep LoadReport, loaded bool, err error) {
	p.mu.Lock()
	e, ok := p.entries[id]
	if !ok {
		p.mu.Unlock()
		return LoadReport{}, false, &Error{Op: "prewarm " + id, Kind: ErrUnknownModel}
	}
	// A prewarm holds the load slot for the model's cold time, and the
	// requests that load meanwhile wait for it: only when it takes under a
	// tenth of the time between such loads (slow storage, a thrashing
	// pool: no).
	now := p.opts.Now()
	missRate := p.misses * p.decay(now.Sub(p.missesAt)) * math.Ln2 / p.opts.HalfLife.Seconds()
	if e.cold.Seconds()*missRate > 0.1 {
		p.mu.Unlock()
		return LoadReport{}, false, nil
	}
	if p.load.Busy() {
		// A guess never queues before a request's load: tried again on
		// the next tick.
		p.mu.Unlock()
		return LoadReport{}, false, nil
	}
	if !p.rewarms.take(now, p.opts.RewarmsPerHour) {
		p.mu.Unlock()
		return LoadReport{}, false, nil // the hour's allowance is spent: tried again later
	}
	e.prewarmedAt = p.opts.Now()
	p.mu.Unlock()
	// Only this call's own load is a guess: a request's load it waits
	// behind keeps a request's claim on the room.
	rep, loaded, err = p.prewarm(ctx, id, true)
	if errors.Is(err, ErrOverBudget) {
		p.mu.Lock()
		p.rewarms.giveBack(p.opts.RewarmsPerHour)
		p.mu.Unlock()
		return LoadReport{}, false, nil // no room worth taking, or bigger than the budget
	}
	p.mu.Lock()
	if !loaded {
		p.rewarms.giveBack(p.opts.RewarmsPerHour)
	} else if o, ok := p.opts.Policy.(RewarmObserver); ok && e.model != nil {
		o.Rewarmed(p.useLocked(e, p.opts.Now()))
	}
	p.mu.Unlock()

	return rep, loaded, err
}

// errNoRoomWorthIt: a due prewarm found no room held by models worth less.
var errNoRoomWorthIt = &Error{Op: "prewarm", Kind: ErrOverBudget, Detail: "the room is held by models worth more"}

// expectedUseLocked is a cold model's use as if warm: the bytes it would
// hold are what it is known to need.
func (p *Pool) expectedUseLocked(e *entry, now time.Time) *Use {
	u := p.useLocked(e, now)
	if u.Bytes == 0 {
		u.Bytes = e.fileSize + e.knownHeap
	}
	return u
}

// lastRequestOrUse is when keep-alive counts from: the latest request, or
// for a model never requested (a prewarm) its latest use.
func lastRequestOrUse(u *Use) time.Time {
	if u.LastRequest.IsZero() {
		return u.LastUsed
	}
	return u.LastRequest
}
