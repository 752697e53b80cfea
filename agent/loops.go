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
	a.spawn(runCtx, func(ctx context.Context) {
		a.loop(ctx, "metrics", a.config().MQTT.MetricsInterval, func() {
			if err := a.publish(topicMetrics, false, a.metrics(true)); err != nil {
				a.log.Error("metrics not queued", "err", err)
			}
		})
	})
	a.spawn(runCtx, func(ctx context.Context) {
		a.loop(ctx, "usage", time.Minute, func() {
			if err := a.usage.flush(a.store); err != nil {
				a.log.Error("usage not stored", "err", err)
			}
		})
	})
	var deferred time.Duration
	if startPlan.Plan.Allowance.Mode == power.ModeDefer {
		deferred = startPlan.Plan.Allowance.RetryIn
	}
	a.spawn(runCtx, func(ctx context.Context) { a.planner(ctx, deferred) })
	a.spawn(runCtx, a.calibrator)
	if a.fleet != nil {
		a.spawn(runCtx, a.fleetLoop)
	}
	a.spawn(runCtx, a.finishStart)
	a.spawn(runCtx, a.memoryLoop)
	a.spawn(runCtx, a.eventWriter)
	a.spawn(runCtx, func(ctx context.Context) {
		// One after the other: measuring the read rate drops a file
		// from the page cache and reads it back with read(2). It picks
		// from the registered models: all of them.
		if a.pending.wait(ctx) != nil {
			return
		}
		if a.pool.Stats().ReadRate == 0 { // the device the models are served from
			a.readRateDevice, _ = a.restoreReadRate()
		}
		a.measureReadRate(ctx)
		a.hugePagesLoop(ctx)
	})
	a.restartTunedLoops(runCtx)
}

// tunedLoops are the loops that read settings when they start (keep_alive,
// keep_mapping, schedule_lead, schedule_min_demand, resume_check, the
// model watch): a reload that changes one restarts them all.
type tunedLoops struct {
	cancel   context.CancelFunc
	wg       *sync.WaitGroup
	settings tunedSettings
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

// restartTunedLoops stops the tuned loops (waiting until they have) and
// starts them again on the configuration in force.
func (a *Agent) restartTunedLoops(runCtx context.Context) {
	a.tunedMu.Lock()
	defer a.tunedMu.Unlock()
	if a.tuned.cancel != nil {
		a.tuned.cancel()
		a.tuned.wg.Wait()
	}
	ctx, cancel := context.WithCancel(runCtx)
	wg := &sync.WaitGroup{}
	for _, f := range []func(context.Context){a.resumeLoop, a.scheduleLoop, a.trimLoop, a.watchModels, a.keepAliveLoop} {
		wg.Add(1)
		a.spawn(ctx, func(ctx context.Context) {
			defer wg.Done()
			f(ctx)
		})
	}
	a.tuned = tunedLoops{cancel: cancel, wg: wg, settings: a.config().tunedSettings()}
}

// retuneLoops restarts the tuned loops if the configuration in force
// changed their settings (a reload).
func (a *Agent) retuneLoops() bool {
	a.tunedMu.Lock()
	same := a.tuned.cancel == nil || a.tuned.settings == a.config().tunedSettings()
	a.tunedMu.Unlock()
	if same || a.runCtx == nil {
		return false
	}
	a.restartTunedLoops(a.runCtx)
	return true
}

// resumeLoop posts a wake when the machine resumed from suspend.
func (a *Agent) resumeLoop(ctx context.Context) {
	every := a.config().Prewarm.ResumeCheck
	if every <= 0 {
		return
	}
	d := power.NewResumeDetector(a.opts.Clock, 0)
	a.loop(ctx, "resume", every, func() {
		if ctx.Err() != nil {
			return
		}
		if slept, ok := d.Check(); ok {
			a.log.Info("resumed from suspend", "slept", slept)
			a.PostWake("resume")
		}
	})
}

// loop runs f every interval (or on Options.Ticks' ticks for name) until
// ctx ends, and once more at the end.
func (a *Agent) loop(ctx context.Context, name string, interval time.Duration, f func()) {
	a.kickedLoop(ctx, name, interval, nil, f)
}

// kickedLoop is loop that also runs f when kicked.
func (a *Agent) kickedLoop(ctx context.Context, name string, interval time.Duration, kick <-chan struct{}, f func()) {
	var ticks <-chan time.Time
	if a.opts.Ticks != nil {
		ticks = a.opts.Ticks(name)
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
