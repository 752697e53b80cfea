package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/edge-agent/edge-agent/power"
)

// startLoops starts the agent's own goroutines: the rest of the start's
// plan and later wakes, calibration, metrics, usage, memory, and the tuned
// loops (resume, schedule, keep-alive).
func (a *Agent) startLoops(runCtx context.Context, startPlan PlanResult) {
	a.run.spawn(runCtx, func(ctx context.Context) {
		a.loops.every(ctx, "metrics", a.config().MQTT.MetricsInterval, func() {
			if err := a.tel.publish(topicMetrics, false, a.tel.metrics(true)); err != nil {
				a.log.Error("metrics not queued", "err", err)
			}
		})
	})
	a.run.spawn(runCtx, func(ctx context.Context) {
		a.loops.every(ctx, "usage", time.Minute, func() {
			if err := a.tel.usage.flush(a.store); err != nil {
				a.log.Error("usage not stored", "err", err)
			}
		})
	})
	var deferred time.Duration
	if startPlan.Plan.Allowance.Mode == power.ModeDefer {
		deferred = startPlan.Plan.Allowance.RetryIn
	}
	a.run.spawn(runCtx, func(ctx context.Context) { a.planner.run(ctx, deferred, a.hb) })
	a.run.spawn(runCtx, a.calib.run)
	if a.twins.member() {
		a.run.spawn(runCtx, a.twins.run)
	}
	a.run.spawn(runCtx, a.finishStart)
	a.run.spawn(runCtx, a.mem.loop)
	a.run.spawn(runCtx, a.tel.eventWriter)
	a.run.spawn(runCtx, func(ctx context.Context) {
		// One after the other: measuring the read rate drops a file
		// from the page cache and reads it back with read(2). It picks
		// from the registered models: all of them.
		if a.reg.pending.wait(ctx) != nil {
			return
		}
		if a.pool.Stats().ReadRate == 0 { // the device the models are served from
			a.mem.files.device, _ = a.mem.files.restoreReadRate()
		}
		a.mem.files.measureReadRate(ctx)
		a.mem.files.hugePagesLoop(ctx)
	})
	p := a.planner
	a.loops.startTuned(runCtx, p.resumeLoop, p.scheduleLoop, p.trimLoop, a.watchModels, p.keepAliveLoop)
}

// loopRunner runs the agent's periodic loops (on a test's ticks when
// Options.Ticks gives a channel for one) and owns the tuned loops: the
// loops that read settings when they start (keep_alive, keep_mapping,
// schedule_lead, schedule_min_demand, resume_check, the model watch), all
// restarted when a reload changes one.
//
// mu is held while the old tuned loops stop, so they must never take it
// (nor call retune); it is taken under no other lock.
type loopRunner struct {
	// ticks is Options.Ticks (nil: every loop on its ticker).
	ticks func(loop string) <-chan time.Time
	spawn func(ctx context.Context, f func(context.Context))
	// settings are the tuned loops' settings in force.
	settings func() tunedSettings

	// mu guards the fields below.
	mu     sync.Mutex
	runCtx context.Context         // nil until startTuned
	loops  []func(context.Context) // the tuned loops
	cancel context.CancelFunc      // stops the running ones
	wg     *sync.WaitGroup         // done when they have stopped
	tuned  tunedSettings           // what they started with
}

type tunedSettings struct {
	keepAlive, scheduleLead, resumeCheck time.Duration
	keepMapping                          bool
	scheduleMinDemand                    float64
	watch                                bool
	debounce                             time.Duration
	watched                              string // the watched folders and files
}

func (c *Config) tunedSettings() tunedSettings {
	p := c.Prewarm
	dirs, files := watchTargets(c)
	return tunedSettings{keepAlive: p.KeepAlive, scheduleLead: p.ScheduleLead, resumeCheck: p.ResumeCheck,
		keepMapping: p.KeepMapping == nil || *p.KeepMapping, scheduleMinDemand: p.ScheduleMinDemand,
		watch: c.Updates.watch(), debounce: c.Updates.Debounce,
		watched: fmt.Sprint(dirs, slices.Sorted(maps.Keys(files)))}
}

// startTuned starts loops under runCtx as the tuned loops.
func (r *loopRunner) startTuned(runCtx context.Context, loops ...func(context.Context)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runCtx, r.loops = runCtx, loops
	r.restartLocked()
}

// retune restarts the tuned loops if the settings in force are not what
// they started with (a reload); false when they were not restarted.
func (r *loopRunner) retune() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel == nil || r.tuned == r.settings() {
		return false
	}
	r.restartLocked()
	return true
}

// restartLocked stops the tuned loops (waiting until they have) and starts
// them again on the settings in force.
func (r *loopRunner) restartLocked() {
	if r.cancel != nil {
		r.cancel()
		r.wg.Wait()
	}
	ctx, cancel := context.WithCancel(r.runCtx)
	wg := &sync.WaitGroup{}
	for _, f := range r.loops {
		wg.Add(1)
		r.spawn(ctx, func(ctx context.Context) {
			defer wg.Done()
			f(ctx)
		})
	}
	r.cancel, r.wg, r.tuned = cancel, wg, r.settings()
}

// every runs f every interval (or on Options.Ticks' ticks for name) until
// ctx ends, and once more at the end.
func (r *loopRunner) every(ctx context.Context, name string, interval time.Duration, f func()) {
	r.kicked(ctx, name, interval, nil, f)
}

// kicked is every that also runs f when kicked.
func (r *loopRunner) kicked(ctx context.Context, name string, interval time.Duration, kick <-chan struct{}, f func()) {
	var ticks <-chan time.Time
	if r.ticks != nil {
		ticks = r.ticks(name)
	}
	if ticks == nil {
		t := time.NewTicker(interval)
		defer t.Stop()
		ticks = t.C
	}
	for {
		select {
		case <-ctx.Done():
			f()
			return
		case <-ticks:
			f()
		case <-kick:
			f()
		}
	}
}
