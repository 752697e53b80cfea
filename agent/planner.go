package agent

import (
	"context"
	"errors"
	"time"

	"github.com/edge-agent/edge-agent/agent/plan"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite"
)

// makePlan gathers what a plan depends on (power, allowance, usage,
// calibrations, the pool's models and budget) and plans (plan, pure).
func (a *Agent) makePlan(w power.Wake) Plan {
	st := a.powerReader().Read()
	in := plan.Input{Wake: w, Power: st, Allowance: a.config().policy().Allow(st, a.opts.Rand),
		Budget: a.pool.Stats().Budget, Watts: a.config().Power.WattsPerCPUSecond, Families: planFamilies(a.config().Families)}
	usage, err := a.store.Usage()
	if err != nil {
		a.log.Error("usage history unreadable; planning without it", "err", err)
	}
	now, half := a.opts.Now(), a.store.UsageHalfLife()
	cals := a.calibrations()
	for _, m := range a.pool.Models() {
		if isStaging(m.ID) {
			continue // a new version being checked: the update warms it
		}
		cal, u := cals[m.ID], usage[m.ID]
		in.Models = append(in.Models, plan.Model{ID: m.ID, Pinned: m.Pinned,
			Demand: u.Expected(now, now, half) + u.Expected(now.Add(time.Hour), now, half),
			Stages: tflite.Stages(cal.Stages), Bytes: cal.HeapBytes + cal.MappedBytes, Threads: cal.Threads})
	}
	return plan.Make(in)
}

// runPlan warms the chosen models in order, each in stages (page-in,
// interpreter, allocate, warm-up invoke), until done or ctx is cancelled.
// With pinnedOnly it warms the pinned ones and leaves the rest (Later).
func (a *Agent) runPlan(ctx context.Context, p Plan, pinnedOnly bool) (res PlanResult) {
	res = PlanResult{Plan: p, Warmed: []string{}, Already: []string{}, Failed: []string{}, Later: []string{}}
	if pinnedOnly {
		var pinned []PlanItem
		for _, it := range p.Chosen {
			if it.Pinned {
				pinned = append(pinned, it)
			} else {
				res.Later = append(res.Later, it.Model)
			}
		}
		p.Chosen = pinned
	}
	meter := a.meter()
	whole := meter.Start()
	defer func() { res.Energy = meter.Since(whole) }()
	if a.prom != nil {
		a.prom.wakes.WithLabelValues(p.Wake.Source).Inc()
	}
	a.log.Info("plan", "wake", p.Wake.Source, "mode", p.Allowance.Mode, "reason", p.Allowance.Reason,
		"chosen", modelIDs(p.Chosen), "skipped", modelIDs(p.Skipped))
	for _, s := range p.Skipped {
		a.log.Info("plan: skipped", "model", s.Model, "reason", s.Reason)
	}
	// The start's pinned models are not delayed: READY waits for them.
	if d := p.Allowance.Stagger; d > 0 && !pinnedOnly {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	for i, it := range p.Chosen {
		if ctx.Err() != nil {
			res.Cancelled = true
			a.event("prewarm_cancelled", map[string]any{"wake": p.Wake.Source, "remaining": modelIDs(p.Chosen[i:])})
			return res
		}
		loaded, err := a.prewarmOne(ctx, it.Model, p.Wake.Source)
		switch {
		case errors.Is(err, context.Canceled):
			res.Cancelled = true
			a.event("prewarm_cancelled", map[string]any{"wake": p.Wake.Source, "remaining": modelIDs(p.Chosen[i:])})
			return res
		case err != nil:
			res.Failed = append(res.Failed, it.Model)
		case loaded:
			res.Warmed = append(res.Warmed, it.Model)
		default:
			res.Already = append(res.Already, it.Model)
		}
	}
	return res
}

// prewarmOne warms one model, with its energy in the prewarm_done event.
func (a *Agent) prewarmOne(ctx context.Context, model, source string) (bool, error) {
	if a.opts.BeforePrewarm != nil {
		a.opts.BeforePrewarm(ctx, model)
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
	if source == "start" {
		a.notify.Send("STATUS=warming " + model)
	}
	meter := a.meter()
	sample := meter.Start()
	rep, loaded, err := a.pool.Prewarm(ctx, model)
	energy := meter.Since(sample)
	if source == "start" && err == nil {
		a.notify.Send("STATUS=warm " + model)
	}
	a.noteLoad(model, err)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			a.log.Error("prewarm failed", "model", model, "err", err)
		}
		return false, err
	}
	if loaded {
		s := rep.Stages
		a.log.Info("model warm", "model", model, "wake", source,
			"map_ms", ms(s.Map), "page_in_ms", ms(s.PageIn), "interpreter_ms", ms(s.Interpreter),
			"allocate_ms", ms(s.Allocate), "first_invoke_ms", ms(s.FirstInvoke), "steady_invoke_ms", ms(s.Steady),
			"cold_ms", ms(s.Cold()), "heap_bytes", rep.Footprint.Heap, "cpu_s", energy.CPUSeconds)
		a.event("prewarm_done", map[string]any{"model": model, "wake": source, "stages": rep.Stages,
			"footprint": rep.Footprint, "energy": energy})
	}
	return loaded, nil
}

func modelIDs(items []PlanItem) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.Model
	}
	return out
}

// wakeRequest asks the planner to plan for a wake; reply (if set) gets
// the result.
type wakeRequest struct {
	wake  power.Wake
	reply chan PlanResult
}

// PostWake asks for a plan without waiting for it.
func (a *Agent) PostWake(source string) {
	select {
	case a.wakes <- wakeRequest{wake: power.Wake{Source: source, At: a.opts.Now()}}:
	default:
		a.log.Warn("wake dropped: planner busy with earlier wakes", "source", source)
	}
}

// planner owns the running plan: a newer wake cancels it and plans again;
// a deferred plan is retried after the policy's delay.
func (a *Agent) planner(ctx context.Context, deferred time.Duration) {
	cancel := func() {}
	var running chan struct{}
	var retry <-chan time.Time
	if deferred > 0 {
		retry = time.After(deferred)
	}
	stopRunning := func() {
		cancel()
		if running != nil {
			<-running
			running = nil
		}
	}
	defer stopRunning()
	beat := time.NewTicker(a.hb.Period())
	defer beat.Stop()
	for {
		a.hb.Beat("planner")
		var req wakeRequest
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			continue
		case req = <-a.wakes:
		case <-retry:
			req = wakeRequest{wake: power.Wake{Source: "deferred", At: a.opts.Now()}}
		}
		stopRunning()
		retry = nil
		pctx, cancelPlan := context.WithCancel(ctx)
		cancel = cancelPlan
		plan := a.makePlan(req.wake)
		if plan.Allowance.Mode == power.ModeDefer {
			retry = time.After(plan.Allowance.RetryIn)
		}
		a.event("wake", map[string]any{"source": req.wake.Source, "slept_ns": req.wake.Slept, "mode": plan.Allowance.Mode,
			"reason": plan.Allowance.Reason, "chosen": modelIDs(plan.Chosen), "skipped": plan.Skipped})
		a.wakeMu.Lock()
		a.seen = map[string]bool{}
		a.wakeMu.Unlock()
		done := make(chan struct{})
		running = done
		a.planning.Add(1)
		go func() {
			defer close(done)
			defer a.planning.Add(-1)
			res := a.runPlan(pctx, plan, false)
			if req.reply != nil {
				req.reply <- res
			}
		}()
	}
}

// Wake plans and warms for a wake from source and waits for the result. A
// newer wake cancels it (the result says so).
func (a *Agent) Wake(ctx context.Context, source string) (PlanResult, error) {
	reply := make(chan PlanResult, 1)
	select {
	case a.wakes <- wakeRequest{wake: power.Wake{Source: source, At: a.opts.Now()}, reply: reply}:
	case <-ctx.Done():
		return PlanResult{}, ctx.Err()
	}
	select {
	case r := <-reply:
		return r, nil
	case <-ctx.Done():
		return PlanResult{}, ctx.Err()
	}
}

// scheduleLoop wakes ahead of hours in which the usage history predicts
// demand for a model that is not warm; at most once an hour.
func (a *Agent) scheduleLoop(ctx context.Context) {
	lead, minDemand := a.config().Prewarm.ScheduleLead, a.config().Prewarm.ScheduleMinDemand
	if lead <= 0 {
		return
	}
	var woke time.Time // the hour last woken for
	a.loop(ctx, "schedule", a.opts.ScheduleEvery, func() {
		if ctx.Err() != nil {
			return
		}
		now := a.opts.Now()
		next := now.Truncate(time.Hour).Add(time.Hour)
		if next.Sub(now) > lead || next.Equal(woke) {
			return
		}
		usage, err := a.store.Usage()
		if err != nil {
			return
		}
		for id, u := range usage {
			if u.Expected(next, now, a.store.UsageHalfLife()) >= minDemand && !a.pool.IsWarm(id) {
				woke = next
				a.PostWake("schedule")
				return
			}
		}
	})
}

// trimLoop frees what was not used for the keep-alive.
func (a *Agent) trimLoop(ctx context.Context) {
	ka := a.config().Prewarm.KeepAlive
	if ka <= 0 {
		return
	}
	keep := a.config().Prewarm.KeepMapping == nil || *a.config().Prewarm.KeepMapping
	a.loop(ctx, "trim", max(ka/4, time.Second), func() {
		if ctx.Err() != nil {
			return
		}
		if n := a.pool.Trim(ka, keep); n > 0 {
			a.log.Info("trimmed idle interpreters", "freed", n, "keep_alive", ka)
		}
	})
}

// keepAliveLoop applies the eviction policy's windows every second, and
// right after a request that loaded (kickRewarm): it frees what the
// policy no longer keeps warm and rewarms the models it expects
// (histogram: a timer's pre-warm window, a model evicted while requests
// for it are still expected), when the energy policy allows a full
// prewarm. A rewarm only takes room from models worth less.
func (a *Agent) keepAliveLoop(ctx context.Context) {
	a.kickedLoop(ctx, "keep-alive", time.Second, a.rewarmKick, func() {
		if n := a.pool.Expire(); n > 0 {
			a.log.Debug("keep-alive freed models", "freed", n)
		}
		due := a.pool.DuePrewarms()
		if len(due) == 0 {
			return
		}
		al := a.config().policy().Allow(a.powerReader().Read(), nil)
		if al.Mode != power.ModeAll && al.Mode != power.ModeTopK {
			return
		}
		a.pool.SetRewarmsPerHour(rewarmsPerHour(al.Mode))
		for _, id := range due {
			if ctx.Err() != nil {
				return
			}
			rep, loaded, err := a.pool.PrewarmDue(ctx, id)
			switch {
			case err != nil:
				a.log.Warn("rewarm failed", "model", id, "err", err)
			case loaded:
				a.log.Info("rewarmed", "model", id, "cold_ms", ms(rep.Stages.Cold()))
			}
		}
	})
}

// Rewarm allowances per hour by the energy policy's mode: on external
// power the policy's own payoff test decides and this only stops a
// runaway; on battery a fifth of that (each load is CPU-seconds of charge).
const (
	rewarmsPerHourAC      = 60
	rewarmsPerHourBattery = 12
)

func rewarmsPerHour(m power.Mode) float64 {
	if m == power.ModeAll {
		return rewarmsPerHourAC
	}
	return rewarmsPerHourBattery
}

// kickRewarm runs the keep-alive loop now (never blocks): a request that
// loaded may have pushed out models still expected, and the sooner they
// are back the likelier they are warm for their next request.
func (a *Agent) kickRewarm() {
	select {
	case a.rewarmKick <- struct{}{}:
	default:
	}
}
