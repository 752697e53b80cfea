package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-agent/edge-agent/agent/plan"
	"github.com/edge-agent/edge-agent/agent/sdnotify"
	"github.com/edge-agent/edge-agent/agent/update"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// wakePlanner turns wakes into warm models: one plan at a time (a newer
// wake cancels the running one), the loops that post wakes or keep the
// pool in shape (schedule, resume, trim, keep-alive), and family variants
// warmed in the background. The energy policy decides; it only asks.
//
// Its one lock, warmMu, is a leaf: nothing else is taken under it.
type wakePlanner struct {
	plannerDeps

	wakes chan wakeRequest
	// rewarmKick runs the keep-alive loop after a request that loaded.
	rewarmKick chan struct{}
	planning   atomic.Int32 // plans warming now: calibration waits for them

	// warmMu guards warming (family variants being warmed in the
	// background) and runCtx (what they run under; nil before the start).
	warmMu  sync.Mutex
	warming map[string]bool
	runCtx  context.Context
}

// plannerDeps is what the planner asks of the agent.
type plannerDeps struct {
	log    *slog.Logger
	config func() *Config
	// pool and store are the agent's (nil before the start).
	pool  func() *tflite.Pool
	store func() *storage.Store
	// power reads the power state; meter measures a prewarm's energy.
	power        func() *power.Reader
	meter        func() power.Meter
	calibrations func() map[string]storage.Calibration
	now          func() time.Time
	clock        power.Clock    // the kernel clock pair for resume detection (nil: real)
	rand         func() float64 // the policy's stagger
	// beforePrewarm is Options.BeforePrewarm (nil: none).
	beforePrewarm func(ctx context.Context, model string)
	scheduleEvery time.Duration
	// loop runs f every interval, on a test's ticks for name, and when
	// kicked (loopRunner.kicked).
	loop  func(ctx context.Context, name string, interval time.Duration, kick <-chan struct{}, f func())
	spawn func(ctx context.Context, f func(context.Context))
	event func(kind string, fields map[string]any)
	// notify tells systemd the start's progress; noteLoad records a
	// model's load outcome for readiness.
	notify   func(state string)
	noteLoad func(model string, err error)
	// woke runs once a wake is planned, before its plan warms anything;
	// countWake counts a plan by wake source (metrics).
	woke      func()
	countWake func(source string)
	// warmed runs after a family variant warmed in the background.
	warmed func(model string)
}

func newWakePlanner(d plannerDeps) *wakePlanner {
	return &wakePlanner{plannerDeps: d, wakes: make(chan wakeRequest, 8), rewarmKick: make(chan struct{}, 1),
		warming: map[string]bool{}}
}

// start lets background warms run under runCtx (until Close).
func (p *wakePlanner) start(runCtx context.Context) {
	p.warmMu.Lock()
	p.runCtx = runCtx
	p.warmMu.Unlock()
}

// busy says whether a plan is warming now.
func (p *wakePlanner) busy() bool { return p.planning.Load() != 0 }

// makePlan gathers what a plan depends on (power, allowance, usage,
// calibrations, the pool's models and budget) and plans (plan, pure).
func (p *wakePlanner) makePlan(w power.Wake) Plan {
	pool, store := p.pool(), p.store()
	st := p.power().Read()
	in := plan.Input{Wake: w, Power: st, Allowance: p.config().policy().Allow(st, p.rand),
		Budget: pool.Stats().Budget, Watts: p.config().Power.WattsPerCPUSecond, Families: planFamilies(p.config().Families)}
	usage, err := store.Usage()
	if err != nil {
		p.log.Error("usage history unreadable; planning without it", "err", err)
	}
	now, half := p.now(), store.UsageHalfLife()
	cals := p.calibrations()
	for _, m := range pool.Models() {
		if update.IsStaging(m.ID) {
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
func (p *wakePlanner) runPlan(ctx context.Context, pl Plan, pinnedOnly bool) (res PlanResult) {
	res = PlanResult{Plan: pl, Warmed: []string{}, Already: []string{}, Failed: []string{}, Later: []string{}}
	if pinnedOnly {
		var pinned []PlanItem
		for _, it := range pl.Chosen {
			if it.Pinned {
				pinned = append(pinned, it)
			} else {
				res.Later = append(res.Later, it.Model)
			}
		}
		pl.Chosen = pinned
	}
	meter := p.meter()
	whole := meter.Start()
	defer func() { res.Energy = meter.Since(whole) }()
	p.countWake(pl.Wake.Source)
	p.log.Info("plan", "wake", pl.Wake.Source, "mode", pl.Allowance.Mode, "reason", pl.Allowance.Reason,
		"chosen", modelIDs(pl.Chosen), "skipped", modelIDs(pl.Skipped))
	for _, s := range pl.Skipped {
		p.log.Info("plan: skipped", "model", s.Model, "reason", s.Reason)
	}
	// The start's pinned models are not delayed: READY waits for them.
	if d := pl.Allowance.Stagger; d > 0 && !pinnedOnly {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	for i, it := range pl.Chosen {
		if ctx.Err() != nil {
			res.Cancelled = true
			p.event("prewarm_cancelled", map[string]any{"wake": pl.Wake.Source, "remaining": modelIDs(pl.Chosen[i:])})
			return res
		}
		loaded, err := p.prewarmOne(ctx, it.Model, pl.Wake.Source)
		switch {
		case errors.Is(err, context.Canceled):
			res.Cancelled = true
			p.event("prewarm_cancelled", map[string]any{"wake": pl.Wake.Source, "remaining": modelIDs(pl.Chosen[i:])})
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
func (p *wakePlanner) prewarmOne(ctx context.Context, model, source string) (bool, error) {
	if p.beforePrewarm != nil {
		p.beforePrewarm(ctx, model)
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
	if source == "start" {
		p.notify("STATUS=warming " + model)
	}
	meter := p.meter()
	sample := meter.Start()
	rep, loaded, err := p.pool().Prewarm(ctx, model)
	energy := meter.Since(sample)
	if source == "start" && err == nil {
		p.notify("STATUS=warm " + model)
	}
	p.noteLoad(model, err)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			p.log.Error("prewarm failed", "model", model, "err", err)
		}
		return false, err
	}
	if loaded {
		s := rep.Stages
		p.log.Info("model warm", "model", model, "wake", source,
			"map_ms", ms(s.Map), "page_in_ms", ms(s.PageIn), "interpreter_ms", ms(s.Interpreter),
			"allocate_ms", ms(s.Allocate), "first_invoke_ms", ms(s.FirstInvoke), "steady_invoke_ms", ms(s.Steady),
			"cold_ms", ms(s.Cold()), "heap_bytes", rep.Footprint.Heap, "cpu_s", energy.CPUSeconds)
		p.event("prewarm_done", map[string]any{"model": model, "wake": source, "stages": rep.Stages,
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
func (a *Agent) PostWake(source string) { a.planner.post(source) }

// post asks for a plan without waiting for it.
func (p *wakePlanner) post(source string) {
	select {
	case p.wakes <- wakeRequest{wake: power.Wake{Source: source, At: p.now()}}:
	default:
		p.log.Warn("wake dropped: planner busy with earlier wakes", "source", source)
	}
}

// run owns the running plan until ctx ends: a newer wake cancels it and
// plans again; a deferred plan is retried after the policy's delay. It
// beats hb as the "planner" loop.
func (p *wakePlanner) run(ctx context.Context, deferred time.Duration, hb *sdnotify.Heartbeats) {
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
	beat := time.NewTicker(hb.Period())
	defer beat.Stop()
	for {
		hb.Beat("planner")
		var req wakeRequest
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			continue
		case req = <-p.wakes:
		case <-retry:
			req = wakeRequest{wake: power.Wake{Source: "deferred", At: p.now()}}
		}
		stopRunning()
		retry = nil
		pctx, cancelPlan := context.WithCancel(ctx)
		cancel = cancelPlan
		plan := p.makePlan(req.wake)
		if plan.Allowance.Mode == power.ModeDefer {
			retry = time.After(plan.Allowance.RetryIn)
		}
		p.event("wake", map[string]any{"source": req.wake.Source, "slept_ns": req.wake.Slept, "mode": plan.Allowance.Mode,
			"reason": plan.Allowance.Reason, "chosen": modelIDs(plan.Chosen), "skipped": plan.Skipped})
		p.woke()
		done := make(chan struct{})
		running = done
		p.planning.Add(1)
		go func() {
			defer close(done)
			defer p.planning.Add(-1)
			res := p.runPlan(pctx, plan, false)
			if req.reply != nil {
				req.reply <- res
			}
		}()
	}
}

// Wake plans and warms for a wake from source and waits for the result. A
// newer wake cancels it (the result says so).
func (a *Agent) Wake(ctx context.Context, source string) (PlanResult, error) {
	return a.planner.wake(ctx, source)
}

func (p *wakePlanner) wake(ctx context.Context, source string) (PlanResult, error) {
	reply := make(chan PlanResult, 1)
	select {
	case p.wakes <- wakeRequest{wake: power.Wake{Source: source, At: p.now()}, reply: reply}:
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

// warmInBackground warms model on a goroutine the agent owns, once at a
// time; it does nothing before the start.
func (p *wakePlanner) warmInBackground(model string) {
	p.warmMu.Lock()
	if p.warming[model] || p.runCtx == nil {
		p.warmMu.Unlock()
		return
	}
	p.warming[model] = true
	runCtx := p.runCtx
	p.warmMu.Unlock()
	p.spawn(runCtx, func(ctx context.Context) {
		defer func() {
			p.warmMu.Lock()
			delete(p.warming, model)
			p.warmMu.Unlock()
		}()
		if _, err := p.prewarmOne(ctx, model, "family"); err == nil {
			p.warmed(model)
		}
	})
}
