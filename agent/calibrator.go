package agent

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/edge-agent/edge-agent/agent/calibrate"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// The calibrator measures models in the background, one at a time, at the
// lowest priority: a model is served with defaults from the moment it is
// registered, and the measurement is applied to its next load when done.
// It waits while requests are served (they preempt it between loads),
// obeys the energy policy, and takes each load's memory from the pool's
// budget and load slot. It also keeps Settled: closed once the start's
// plan is done and nothing is queued or measured.
//
// Locks: the calibrator's settleMu is never held with another; it takes
// the registry's prep → mu in apply (the registry's order), and mu alone
// elsewhere.
type calibrator struct {
	d calibratorDeps

	kick chan struct{} // there may be work (cap 1)

	// settleMu guards settled, planDone and changedAt.
	settleMu sync.Mutex
	settled  chan struct{}
	planDone bool // the start's plan is warmed
	// changedAt is the latest reload that added or changed models: a
	// deployment tool that adds a model usually asks it at once, so the
	// quiet calibration waits for counts from there too.
	changedAt time.Time
}

// calibratorDeps is what the calibrator asks of the agent.
type calibratorDeps struct {
	log             *slog.Logger
	config          func() *Config
	power           func() *power.Reader
	now             func() time.Time
	started         time.Time
	beforeCalibrate func(ctx context.Context, model string) // nil: none
	store           func() *storage.Store
	pool            func() *tflite.Pool
	planBusy        func() bool // a plan is warming
	// reg is the agent's model states; apply holds its prep lock.
	reg *registry

	statusChanged func()
	event         func(kind string, fields map[string]any)
	observeTime   func(model string, took time.Duration) // metrics; nil: none

	settleDelegates    func(st *modelState, attempt bool)
	restoreCalibration func(st *modelState) error
	calibrationKey     func(digest, delegate string) storage.Validity
	failModel          func(st *modelState, err error) *modelState
	modelSpec          func(st *modelState) tflite.ModelSpec

	// Sharing with twins (twins.go).
	adoptFleet   func(ctx context.Context, work *modelState, k storage.Validity) bool
	verifyFleet  func(ctx context.Context, st, work *modelState)
	fleetPublish func(work *modelState, cal storage.Calibration)
}

func newCalibrator(d calibratorDeps) *calibrator {
	return &calibrator{d: d, kick: make(chan struct{}, 1), settled: make(chan struct{})}
}

// kickCalibrator tells the calibrator there may be work.
func (c *calibrator) kickCalibrator() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run calibrates until ctx ends.
func (c *calibrator) run(ctx context.Context) {
	for {
		st := c.nextToCalibrate()
		if st == nil {
			c.settle(false)
			select {
			case <-ctx.Done():
				return
			case <-c.kick:
			}
			continue
		}
		if wait, reason := c.calibrationAllowed(); wait > 0 {
			c.d.reg.locked(func() { st.queued, st.calibrating = true, false })
			c.settle(true) // nothing more happens until the policy allows it
			c.d.log.Info("calibration deferred", "reason", reason, "retry_in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			case <-c.kick:
			}
			continue
		}
		c.calibrate(ctx, st)
	}
}

// nextToCalibrate takes the queued model that matters most: pinned first,
// then by demand; verifications of fleet records last.
func (c *calibrator) nextToCalibrate() *modelState {
	usage, _ := c.d.store().Usage()
	now := c.d.now()
	c.d.reg.mu.Lock()
	defer c.d.reg.mu.Unlock()
	var queued []*modelState
	for _, id := range c.d.reg.order {
		if st := c.d.reg.models[id]; st.queued && st.failed == nil {
			queued = append(queued, st)
		}
	}
	if len(queued) == 0 {
		return nil
	}
	demand := func(st *modelState) float64 {
		return usage[st.cfg.ID].Expected(now, now, c.d.store().UsageHalfLife())
	}
	sort.SliceStable(queued, func(i, j int) bool {
		// Verifying a twin's record waits until every model has one.
		if vi, vj := queued[i].needsVerifying(), queued[j].needsVerifying(); vi != vj {
			return vj
		}
		if queued[i].cfg.Pinned != queued[j].cfg.Pinned {
			return queued[i].cfg.Pinned
		}
		return demand(queued[i]) > demand(queued[j])
	})
	st := queued[0]
	st.queued, st.calibrating = false, true
	return st
}

// calibrationAllowed says how long to wait before calibrating, and why:
// not while hot or busy (the policy defers), not on a battery below
// low_percent (pinned-only or nothing: models keep their defaults).
func (c *calibrator) calibrationAllowed() (time.Duration, string) {
	al := c.d.config().policy().Allow(c.d.power().Read(), nil)
	switch al.Mode {
	case power.ModeDefer:
		return al.RetryIn, al.Reason
	case power.ModeNone, power.ModePinned:
		return max(c.d.config().Power.DeferFor, time.Second), al.Reason
	}
	return 0, ""
}

// yieldToRequests waits until the start's plan is done, no plan is
// warming, no request is in flight and none came for calibration.idle_after
// (counted from the start, too): calibration has the lowest priority.
func (c *calibrator) yieldToRequests(ctx context.Context) error {
	idle := c.d.config().Calibration.IdleAfter
	for {
		leased, last := c.d.pool().Activity()
		c.settleMu.Lock()
		started := c.planDone
		for _, t := range []time.Time{c.d.started, c.changedAt} {
			if last.Before(t) {
				last = t
			}
		}
		c.settleMu.Unlock()
		quiet := time.Since(last)
		if started && !c.d.planBusy() && leased == 0 && quiet >= idle {
			return nil
		}
		wait := max(idle-quiet, 10*time.Millisecond)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// calibrate settles st's delegates and measures it, then applies the result
// if st is still the registered state of its model.
func (c *calibrator) calibrate(ctx context.Context, st *modelState) {
	defer func() {
		c.d.reg.locked(func() { st.calibrating = false })
		c.d.statusChanged()
	}()
	c.d.statusChanged()
	// Work on a copy: the live state is read by requests meanwhile.
	var work modelState
	c.d.reg.locked(func() { work = *st })

	if work.delegatesPending {
		if err := c.yieldToRequests(ctx); err != nil {
			return
		}
		c.d.settleDelegates(&work, true)
	}
	if err := c.d.restoreCalibration(&work); err != nil {
		c.apply(ctx, st, &work, err)
		return
	}
	switch {
	case work.needsVerifying():
		c.d.verifyFleet(ctx, st, &work)
		return
	case work.cal.Threads > 0 || work.failed != nil:
		c.apply(ctx, st, &work, nil) // known after all (a delegate's key was restored)
		return
	}
	v := c.d.calibrationKey(work.report.SHA256, work.report.Delegate.Chosen)
	if c.d.adoptFleet(ctx, &work, v) {
		c.apply(ctx, st, &work, nil)
		c.requeue(st) // to verify, once every model has what the fleet knows
		return
	}
	c.measureHere(ctx, st, &work, v)
}

// calibrationRun is how the calibrator measures, from the configuration.
func (c *calibrator) calibrationRun() calibrate.Calibration {
	cfg := c.d.config().Calibration
	return calibrate.Calibration{Runs: cfg.Runs, Steady: cfg.SteadyInvokes, MaxThreads: cfg.MaxThreads, PageIn: c.d.config().pageIn(),
		Budget: c.d.pool(), Yield: c.yieldToRequests}
}

// requeue queues st for the calibrator again if it is still its model's
// state.
func (c *calibrator) requeue(st *modelState) {
	c.d.reg.locked(func() {
		if c.d.reg.models[st.cfg.ID] == st && st.needsVerifying() {
			st.queued = true
		}
	})
	c.kickCalibrator()
}

// measureHere calibrates work on this device under key v, stores and
// applies the result, and offers it to the fleet.
func (c *calibrator) measureHere(ctx context.Context, st, work *modelState, v storage.Validity) {
	id := work.cfg.ID
	// The mark below is a commit (an fsync): not beside a request either.
	if err := c.yieldToRequests(ctx); err != nil {
		return
	}
	// Mark the attempt first: if a kernel crashes the process inside it,
	// the next start finds the mark and does not try again.
	if err := c.d.store().PutCalibration(id, storage.Calibration{Validity: v, Pending: true}); err != nil {
		c.d.log.Error("calibration not begun: its attempt could not be recorded", "model", id, "err", err)
		return
	}
	if c.d.beforeCalibrate != nil {
		c.d.beforeCalibrate(ctx, id)
	}
	run := c.calibrationRun()
	run.HeapGuess = c.knownHeap(id)
	t := time.Now()
	cal, err := run.Run(ctx, work.path, c.d.config().Pool.Threads, work.chosen)
	took := time.Since(t)
	work.report.CalibrationCPU += run.CPU
	switch {
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		// Shutdown: not a failure, measure again next time.
		if ferr := c.d.store().ForgetCalibration(id, v); ferr != nil {
			c.d.log.Error("cancelled calibration not forgotten", "model", id, "err", ferr)
		}
		return
	case errors.Is(err, tflite.ErrOverBudget):
		// Pinned models hold the budget: no room to measure in. Not the
		// model's fault; it keeps its defaults and is measured next start.
		if ferr := c.d.store().ForgetCalibration(id, v); ferr != nil {
			c.d.log.Error("skipped calibration not forgotten", "model", id, "err", ferr)
		}
		c.d.log.Warn("calibration skipped: no room in the budget beside pinned models", "model", id, "err", err)
		c.d.event("calibration_skipped", map[string]any{"model": id, "reason": err.Error()})
		return
	case err != nil:
		c.d.log.Error("calibration failed; the model keeps its defaults", "model", id, "code", tflite.Code(err), "err", err)
		rec := storage.Calibration{Validity: v, Failed: tflite.Code(err), FailedMessage: err.Error()}
		if perr := c.d.store().PutCalibration(id, rec); perr != nil {
			c.d.log.Error("calibration failure not stored", "model", id, "err", perr)
		}
		c.d.event("calibration_failed", map[string]any{"model": id, "code": tflite.Code(err), "reason": err.Error()})
		c.apply(ctx, st, work, err)
		return
	}
	cal.Validity = v
	cal.At = c.d.now()
	if err := c.d.store().PutCalibration(id, cal); err != nil {
		// Not fatal: the model serves; the next start measures again.
		c.d.log.Error("calibration not stored", "model", id, "err", err)
	}
	work.cal = cal
	work.report.CalibrationTime = took
	work.report.Threads = cal.Threads
	work.report.Calibrated = &cal
	c.d.log.Info("model calibrated", "model", id, "status", work.report.Calibration.Status, "reason", work.report.Calibration.Reason,
		"threads", cal.Threads, "calibration_ms", ms(took), "cpu_ms", ms(work.report.CalibrationCPU))
	if c.d.observeTime != nil {
		c.d.observeTime(id, took)
	}
	c.d.event("calibrated", map[string]any{"model": id, "threads": cal.Threads, "calibration_ms": ms(took),
		"heap_bytes": cal.HeapBytes, "steady_ms": ms(cal.Stages.Steady)})
	c.d.fleetPublish(work, cal)
	c.apply(ctx, st, work, nil)
}

// apply makes what the calibrator learned (work) the model's state, unless
// the model was registered again or removed meanwhile.
func (c *calibrator) apply(ctx context.Context, st, work *modelState, failure error) {
	defer func() {
		// A warm model whose options changed gets an interpreter with the
		// new ones before the old ones go: no request meets it cold.
		if _, err := c.d.pool().Refresh(ctx, work.cfg.ID); err != nil && ctx.Err() == nil {
			c.d.log.Warn("model not re-warmed with its calibration; the next load uses it", "model", work.cfg.ID, "err", err)
		}
	}()
	c.d.reg.prep.Lock()
	defer c.d.reg.prep.Unlock()
	if !c.d.reg.current(st) {
		return
	}
	if failure != nil {
		c.d.failModel(work, failure)
	}
	spec := c.d.modelSpec(work)
	var err error
	if spec.Path != st.path {
		// A delegate now serves the accelerator model its twin stood in for.
		err = c.d.pool().Replace(spec)
	} else {
		err = c.d.pool().Update(spec)
	}
	if err != nil {
		c.d.failModel(work, err)
	}
	c.d.reg.locked(func() {
		work.queued, work.calibrating = false, true // cleared by calibrate's defer on st
		*st = *work
	})
}

// knownHeap is the pool's measurement of model id's heap, if it has one.
func (c *calibrator) knownHeap(id string) int64 {
	for _, m := range c.d.pool().Models() {
		if m.ID == id && m.Interpreters > 0 {
			return max(m.Bytes-m.LastLoad.Footprint.Mapped, 0) / int64(m.Interpreters)
		}
	}
	return 0
}

// settle closes the settled channel once nothing is queued or measured,
// or (deferred) once what is queued waits for the energy policy.
func (c *calibrator) settle(deferred bool) {
	busy := false
	c.d.reg.each(func(st *modelState) {
		busy = busy || st.calibrating || (st.queued && !deferred)
	})
	if busy {
		return
	}
	c.settleMu.Lock()
	if c.planDone && !closed(c.settled) {
		close(c.settled)
	}
	c.settleMu.Unlock()
}

// unsettle re-arms Settled for new work (a reload registered models) and
// looks for it.
func (c *calibrator) unsettle() {
	c.settleMu.Lock()
	if closed(c.settled) {
		c.settled = make(chan struct{})
	}
	c.changedAt = time.Now()
	c.settleMu.Unlock()
	c.kickCalibrator()
}

// startPlanDone lets Settled close once the rest is done too.
func (c *calibrator) startPlanDone() {
	c.settleMu.Lock()
	c.planDone = true
	c.settleMu.Unlock()
	c.kickCalibrator()
}

// Settled is the channel closed once the background work is done.
func (c *calibrator) Settled() <-chan struct{} {
	c.settleMu.Lock()
	defer c.settleMu.Unlock()
	return c.settled
}

// Settled is closed once the start's background work is done (every
// model warmed as planned and calibrated), and again after a reload's.
func (a *Agent) Settled() <-chan struct{} { return a.calib.Settled() }

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
