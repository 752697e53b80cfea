package agent

import (
	"context"
	"errors"
	"sort"
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
// budget and load slot.

// kickCalibrator tells the calibrator there may be work.
func (a *Agent) kickCalibrator() {
	select {
	case a.calKick <- struct{}{}:
	default:
	}
}

// calibrator runs until ctx ends.
func (a *Agent) calibrator(ctx context.Context) {
	for {
		st := a.nextToCalibrate()
		if st == nil {
			a.settle(false)
			select {
			case <-ctx.Done():
				return
			case <-a.calKick:
			}
			continue
		}
		if wait, reason := a.calibrationAllowed(); wait > 0 {
			a.mapsMu.Lock()
			st.queued, st.calibrating = true, false
			a.mapsMu.Unlock()
			a.settle(true) // nothing more happens until the policy allows it
			a.log.Info("calibration deferred", "reason", reason, "retry_in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			case <-a.calKick:
			}
			continue
		}
		a.calibrate(ctx, st)
	}
}

// nextToCalibrate takes the queued model that matters most: pinned first,
// then by demand; verifications of fleet records last.
func (a *Agent) nextToCalibrate() *modelState {
	usage, _ := a.store.Usage()
	now := a.opts.Now()
	a.mapsMu.Lock()
	defer a.mapsMu.Unlock()
	var queued []*modelState
	for _, id := range a.order {
		if st := a.models[id]; st.queued && st.failed == nil {
			queued = append(queued, st)
		}
	}
	if len(queued) == 0 {
		return nil
	}
	demand := func(st *modelState) float64 {
		return usage[st.cfg.ID].Expected(now, now, a.store.UsageHalfLife())
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
func (a *Agent) calibrationAllowed() (time.Duration, string) {
	al := a.config().policy().Allow(a.powerReader().Read(), nil)
	switch al.Mode {
	case power.ModeDefer:
		return al.RetryIn, al.Reason
	case power.ModeNone, power.ModePinned:
		return max(a.config().Power.DeferFor, time.Second), al.Reason
	}
	return 0, ""
}

// yieldToRequests waits until the start's plan is done, no plan is
// warming, no request is in flight and none came for calibration.idle_after
// (counted from the start, too): calibration has the lowest priority.
func (a *Agent) yieldToRequests(ctx context.Context) error {
	idle := a.config().Calibration.IdleAfter
	for {
		leased, last := a.pool.Activity()
		if last.Before(a.opts.Started) {
			last = a.opts.Started
		}
		a.settleMu.Lock()
		started := a.startPlanDone
		a.settleMu.Unlock()
		quiet := time.Since(last)
		if started && !a.planner.busy() && leased == 0 && quiet >= idle {
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
func (a *Agent) calibrate(ctx context.Context, st *modelState) {
	defer func() {
		a.mapsMu.Lock()
		st.calibrating = false
		a.mapsMu.Unlock()
		a.statusChanged()
	}()
	a.statusChanged()
	// Work on a copy: the live state is read by requests meanwhile.
	a.mapsMu.Lock()
	work := *st
	a.mapsMu.Unlock()

	if work.delegatesPending {
		if err := a.yieldToRequests(ctx); err != nil {
			return
		}
		a.settleDelegates(&work, true)
	}
	if err := a.restoreCalibration(&work); err != nil {
		a.apply(ctx, st, &work, err)
		return
	}
	switch {
	case work.needsVerifying():
		a.verifyFleet(ctx, st, &work)
		return
	case work.cal.Threads > 0 || work.failed != nil:
		a.apply(ctx, st, &work, nil) // known after all (a delegate's key was restored)
		return
	}
	v := a.calibrationKey(work.report.SHA256, work.report.Delegate.Chosen)
	if a.adoptFleet(ctx, &work, v) {
		a.apply(ctx, st, &work, nil)
		a.requeue(st) // to verify, once every model has what the fleet knows
		return
	}
	a.measureHere(ctx, st, &work, v)
}

// calibrationRun is how the calibrator measures, from the configuration.
func (a *Agent) calibrationRun() calibrate.Calibration {
	cfg := a.config().Calibration
	return calibrate.Calibration{Runs: cfg.Runs, Steady: cfg.SteadyInvokes, MaxThreads: cfg.MaxThreads, PageIn: a.config().pageIn(),
		Budget: a.pool, Yield: a.yieldToRequests}
}

// requeue queues st for the calibrator again if it is still its model's
// state.
func (a *Agent) requeue(st *modelState) {
	a.mapsMu.Lock()
	if a.models[st.cfg.ID] == st && st.needsVerifying() {
		st.queued = true
	}
	a.mapsMu.Unlock()
	a.kickCalibrator()
}

// measureHere calibrates work on this device under key v, stores and
// applies the result, and offers it to the fleet.
func (a *Agent) measureHere(ctx context.Context, st, work *modelState, v storage.Validity) {
	id := work.cfg.ID
	// Mark the attempt first: if a kernel crashes the process inside it,
	// the next start finds the mark and does not try again.
	if err := a.store.PutCalibration(id, storage.Calibration{Validity: v, Pending: true}); err != nil {
		a.log.Error("calibration not begun: its attempt could not be recorded", "model", id, "err", err)
		return
	}
	if a.opts.BeforeCalibrate != nil {
		a.opts.BeforeCalibrate(ctx, id)
	}
	c := a.calibrationRun()
	c.HeapGuess = a.knownHeap(id)
	t := time.Now()
	cal, err := c.Run(ctx, work.path, a.config().Pool.Threads, work.chosen)
	took := time.Since(t)
	work.report.CalibrationCPU += c.CPU
	switch {
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		// Shutdown: not a failure, measure again next time.
		if ferr := a.store.ForgetCalibration(id, v); ferr != nil {
			a.log.Error("cancelled calibration not forgotten", "model", id, "err", ferr)
		}
		return
	case errors.Is(err, tflite.ErrOverBudget):
		// Pinned models hold the budget: no room to measure in. Not the
		// model's fault; it keeps its defaults and is measured next start.
		if ferr := a.store.ForgetCalibration(id, v); ferr != nil {
			a.log.Error("skipped calibration not forgotten", "model", id, "err", ferr)
		}
		a.log.Warn("calibration skipped: no room in the budget beside pinned models", "model", id, "err", err)
		a.event("calibration_skipped", map[string]any{"model": id, "reason": err.Error()})
		return
	case err != nil:
		a.log.Error("calibration failed; the model keeps its defaults", "model", id, "code", tflite.Code(err), "err", err)
		rec := storage.Calibration{Validity: v, Failed: tflite.Code(err), FailedMessage: err.Error()}
		if perr := a.store.PutCalibration(id, rec); perr != nil {
			a.log.Error("calibration failure not stored", "model", id, "err", perr)
		}
		a.event("calibration_failed", map[string]any{"model": id, "code": tflite.Code(err), "reason": err.Error()})
		a.apply(ctx, st, work, err)
		return
	}
	cal.Validity = v
	cal.At = a.opts.Now()
	if err := a.store.PutCalibration(id, cal); err != nil {
		// Not fatal: the model serves; the next start measures again.
		a.log.Error("calibration not stored", "model", id, "err", err)
	}
	work.cal = cal
	work.report.CalibrationTime = took
	work.report.Threads = cal.Threads
	work.report.Calibrated = &cal
	a.log.Info("model calibrated", "model", id, "status", work.report.Calibration.Status, "reason", work.report.Calibration.Reason,
		"threads", cal.Threads, "calibration_ms", ms(took), "cpu_ms", ms(work.report.CalibrationCPU))
	if a.prom != nil {
		a.prom.calibration.WithLabelValues(id).Add(took.Seconds())
	}
	a.event("calibrated", map[string]any{"model": id, "threads": cal.Threads, "calibration_ms": ms(took),
		"heap_bytes": cal.HeapBytes, "steady_ms": ms(cal.Stages.Steady)})
	a.fleetPublish(work, cal)
	a.apply(ctx, st, work, nil)
}

// apply makes what the calibrator learned (work) the model's state, unless
// the model was registered again or removed meanwhile.
func (a *Agent) apply(ctx context.Context, st, work *modelState, failure error) {
	defer func() {
		// A warm model whose options changed gets an interpreter with the
		// new ones before the old ones go: no request meets it cold.
		if _, err := a.pool.Refresh(ctx, work.cfg.ID); err != nil && ctx.Err() == nil {
			a.log.Warn("model not re-warmed with its calibration; the next load uses it", "model", work.cfg.ID, "err", err)
		}
	}()
	a.prepMu.Lock()
	defer a.prepMu.Unlock()
	a.mapsMu.Lock()
	current := a.models[work.cfg.ID] == st
	a.mapsMu.Unlock()
	if !current {
		return
	}
	if failure != nil {
		a.failModel(work, failure)
	}
	spec := a.modelSpec(work)
	var err error
	if spec.Path != st.path {
		// A delegate now serves the accelerator model its twin stood in for.
		err = a.pool.Replace(spec)
	} else {
		err = a.pool.Update(spec)
	}
	if err != nil {
		a.failModel(work, err)
	}
	a.mapsMu.Lock()
	work.queued, work.calibrating = false, true // cleared by calibrate's defer on st
	*st = *work
	a.mapsMu.Unlock()
}

// knownHeap is the pool's measurement of model id's heap, if it has one.
func (a *Agent) knownHeap(id string) int64 {
	for _, m := range a.pool.Models() {
		if m.ID == id && m.Interpreters > 0 {
			return max(m.Bytes-m.LastLoad.Footprint.Mapped, 0) / int64(m.Interpreters)
		}
	}
	return 0
}

// settle closes the settled channel once nothing is queued or measured,
// or (deferred) once what is queued waits for the energy policy.
func (a *Agent) settle(deferred bool) {
	a.mapsMu.Lock()
	busy := false
	for _, st := range a.models {
		busy = busy || st.calibrating || (st.queued && !deferred)
	}
	a.mapsMu.Unlock()
	if busy {
		return
	}
	a.settleMu.Lock()
	if a.startPlanDone && !closed(a.settled) {
		close(a.settled)
	}
	a.settleMu.Unlock()
}

// unsettle re-arms Settled for new work (a reload registered models).
func (a *Agent) unsettle() {
	a.settleMu.Lock()
	if closed(a.settled) {
		a.settled = make(chan struct{})
	}
	a.settleMu.Unlock()
	a.kickCalibrator()
	a.kickHugePages()
}

// Settled is closed once the start's background work is done (every
// model warmed as planned and calibrated), and again after a reload's.
func (a *Agent) Settled() <-chan struct{} {
	a.settleMu.Lock()
	defer a.settleMu.Unlock()
	return a.settled
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
