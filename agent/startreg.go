package agent

import (
	"context"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/edge-agent/edge-agent/internal/slot"
	"github.com/edge-agent/edge-agent/internal/smallfirst"
)

// pendingModels are the configured models a start has not registered yet.
// Registering reads each model's file (mapping, verifying, hashing when no
// digest is cached), so Start does it after it accepts requests: a
// background goroutine registers them in configured order, and a request
// for one of them registers it at once, ahead of the rest, on its own
// goroutine. A model file that is slow to read (a large one on an SD card,
// or one that blocks) delays only requests for that model.
//
// Registrations take turns, smallest file first (turns): six requests
// at once registered six files at once, and on two cores the hashing and
// copying of the large ones kept the small ones' goroutines waiting for a
// CPU (lstm's 14 KB took 11 ms to register, then 11 ms more to load). A
// turn ends when its registration does or after turnMax, so a file slow
// to read holds no one else up for longer.
type pendingModels struct {
	turns slot.Slot
	// small holds a large file's registration back while a small one's
	// (or a small model's load, in the pool) runs; shared with the pool.
	small *smallfirst.Gate
	// mu guards byID, order and rank.
	mu    sync.Mutex
	byID  map[string]*pendingModel
	order []string
	// rank is each configured model's place, for the models' listing.
	rank map[string]int
	// all is closed once the start registered every model (or a reload
	// took over).
	all chan struct{}
	// planDeferred: models were pending when the start planned, so the
	// start's plan (report) is the one run once all are registered.
	planDeferred bool
	plan         *PlanResult
	// register registers a claimed model (its file read with no lock
	// held) and finishes its claim.
	register func(*pendingModel)
}

// pendingModel is one model waiting to be registered; done is closed once
// it is (or it was dropped).
type pendingModel struct {
	cfg     ModelConfig
	claimed bool
	done    chan struct{}
}

func newPendingModels(models []ModelConfig, register func(*pendingModel), small *smallfirst.Gate) *pendingModels {
	p := &pendingModels{byID: map[string]*pendingModel{}, rank: map[string]int{}, all: make(chan struct{}), register: register, small: small}
	for i, m := range models {
		p.byID[m.ID] = &pendingModel{cfg: m, done: make(chan struct{})}
		p.order = append(p.order, m.ID)
		p.rank[m.ID] = i
	}
	if len(models) == 0 {
		close(p.all)
	}
	return p
}

// registerRest registers the models no request asked for yet, in
// configured order.
func (p *pendingModels) registerRest(ctx context.Context) {
	for ctx.Err() == nil {
		m, ok := p.next()
		if !ok {
			return
		}
		p.registerInTurn(ctx, m)
	}
}

// turnMax bounds a registration's turn: longer than a few MB take to
// read and hash here (v2's 3.6 MB: ~5 ms), short enough that a file slow
// to read (an SD card, a hung mount) holds the others up no longer.
const turnMax = 50 * time.Millisecond

// tinyModelFile is the largest model file registered without a turn: the
// turn of a large file that came first (its request's goroutine ran
// first) kept a 14 KB LSTM waiting 16 ms for a registration of under a
// millisecond. The pool loads such files beside its load slot too.
const tinyModelFile = 1 << 20

// registerInTurn registers claimed model m in its turn (by file size). A
// model is registered whatever happens: a caller whose ctx ends while it
// waits registers it without a turn, as the claim is its alone.
func (p *pendingModels) registerInTurn(ctx context.Context, m *pendingModel) {
	var size int64
	if fi, err := os.Stat(m.cfg.Path); err == nil {
		size = fi.Size()
	}
	if size <= tinyModelFile {
		done := p.small.Small()
		p.register(m) // a millisecond: no turn to wait for
		done()
		return
	}
	if err := p.turns.Acquire(ctx, size); err != nil {
		p.register(m)
		return
	}
	// Behind the small models being registered or loaded now (bounded).
	_ = p.small.Wait(ctx) // a ctx that ended: registered all the same
	var once sync.Once
	end := func() { once.Do(p.turns.Release) }
	t := time.AfterFunc(turnMax, end)
	p.register(m)
	t.Stop()
	end()
}

// resolve registers model id now if the start has not yet (the pool asks,
// for a request or a plan): the caller's model goes ahead of the others,
// and waits for no other model's file. It reports whether id was pending
// (and is registered now, unless ctx ended first).
func (p *pendingModels) resolve(ctx context.Context, id string) bool {
	m, owner, ok := p.claim(id)
	switch {
	case !ok:
		return false
	case owner:
		p.registerInTurn(ctx, m)
		return true
	}
	select {
	case <-m.done:
		return true
	case <-ctx.Done():
		return false
	}
}

// claim gives the caller model id to register (owner), or the claim of
// whoever registers it already (wait on done); ok is false when id is not
// pending.
func (p *pendingModels) claim(id string) (m *pendingModel, owner, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok = p.byID[id]
	if !ok {
		return nil, false, false
	}
	owner = !m.claimed
	m.claimed = true
	return m, owner, true
}

// next claims the first model in configured order no one registers yet.
func (p *pendingModels) next() (*pendingModel, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range p.order {
		if m, ok := p.byID[id]; ok && !m.claimed {
			m.claimed = true
			return m, true
		}
	}
	return nil, false
}

// wanted reports whether m is still to be registered: false when a reload
// dropped it in the meantime (the reload registers the models itself).
func (p *pendingModels) wanted(m *pendingModel) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byID[m.cfg.ID] == m
}

// finish ends m's claim once the model is registered (or not wanted):
// it leaves the set only then, so a request never finds it in neither.
func (p *pendingModels) finish(m *pendingModel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byID[m.cfg.ID] == m {
		delete(p.byID, m.cfg.ID)
	}
	close(m.done)
	p.closeIfEmptyLocked()
}

// drop forgets every pending model: a reload registers what is configured
// then. Registrations under way finish, and are discarded (wanted).
func (p *pendingModels) drop() {
	if p == nil { // before Start
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, m := range p.byID {
		if !m.claimed {
			close(m.done)
		}
		delete(p.byID, id)
	}
	p.closeIfEmptyLocked()
}

func (p *pendingModels) closeIfEmptyLocked() {
	if len(p.byID) > 0 {
		return
	}
	select {
	case <-p.all:
	default:
		close(p.all)
	}
}

// before reports whether configured model a comes before b (unknown ids
// last, in the order they came).
func (p *pendingModels) before(a, b string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ra, oka := p.rank[a]
	rb, okb := p.rank[b]
	return oka && (!okb || ra < rb)
}

// ids are the models still pending.
func (p *pendingModels) ids() []string {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.byID))
	for id := range p.byID {
		out = append(out, id)
	}
	return out
}

// notePlanning records whether the start plans before every model is
// registered.
func (p *pendingModels) notePlanning() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.planDeferred = len(p.byID) > 0
}

// setPlan keeps the start's plan when the start planned early: the plan
// run once every model is registered (rest), with what the start's own
// plan for the pinned models did (pinned).
func (p *pendingModels) setPlan(pinned *PlanResult, rest PlanResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.planDeferred || pinned == nil {
		return
	}
	res := rest
	res.Warmed = append(slices.Clone(pinned.Warmed), rest.Warmed...)
	res.Failed = append(slices.Clone(pinned.Failed), rest.Failed...)
	res.Already = slices.DeleteFunc(slices.Clone(rest.Already), func(id string) bool {
		return slices.Contains(pinned.Warmed, id) || slices.Contains(pinned.Failed, id)
	})
	p.plan = &res
}

// startPlan is the start's plan over every model, once run (nil when the
// start's own plan covered them all, or before).
func (p *pendingModels) startPlan() *PlanResult {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.plan
}

// wait returns once every model is registered, or ctx is done.
func (p *pendingModels) wait(ctx context.Context) error {
	select {
	case <-p.all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
