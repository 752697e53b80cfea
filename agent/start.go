package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/edge-agent/edge-agent/agent/hardware"
	"github.com/edge-agent/edge-agent/internal/smallfirst"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// Start makes every configured model servable at once, then warms the
// pinned ones; everything else (warming the rest, calibrating) goes on in
// the background. Sinks start before sources: state, pool and models
// exist before MQTT can deliver a command.
func (a *Agent) Start(ctx context.Context) error {
	a.notify.Send("STATUS=opening state")
	a.newReport()
	// The state file opens (1–2 ms here for a new one, unsynced) while
	// the models are resolved and the memory planned: neither touches the
	// state, and a request waits for all three.
	opened := make(chan openedState, 1)
	go func() { opened <- a.openState() }()
	models, err := resolveModels(*a.config(), a.log)
	if err == nil {
		plan := a.mem.applyPlan()
		a.tel.report.Memory = &plan
	}
	// One gate for the registrations and the pool's loads: a small
	// model's registration holds the large loads back too, and its load
	// the large registrations.
	small := &smallfirst.Gate{}
	if serr := a.takeState(<-opened, small); serr != nil {
		return serr
	}
	if err != nil {
		return err
	}
	t := time.Now()
	a.reg.pending = newPendingModels(models, a.registerPending, small)
	a.newPool()
	a.tel.report.Timings.Pool = time.Since(t)
	runCtx := a.run.start()
	a.planner.start(runCtx)
	a.run.spawn(runCtx, func(ctx context.Context) {
		_ = a.waitQuiet(ctx, time.Now()) // its first save after the start's requests (afterRequests)
		a.reg.facts.persist(ctx)
	})
	if err := a.registerPinned(ctx, models); err != nil {
		return err
	}
	// A model a request asks for registers on that request's goroutine
	// (resolve); the rest wait until the start's requests leave the pool
	// alone: their hashing and checks shared the two cores with the
	// requests, and a 400-byte model answered behind them.
	a.run.spawn(runCtx, func(ctx context.Context) {
		if a.waitQuiet(ctx, time.Now()) == nil {
			a.reg.pending.registerRest(ctx)
		}
	})
	a.mem.files.device, _ = a.mem.files.restoreReadRate(modelPaths(models)...)
	t = time.Now()
	if err := a.startMQTT(ctx, runCtx); err != nil {
		return err
	}
	a.tel.report.Timings.MQTT = time.Since(t)
	a.run.spawn(runCtx, a.ready.statusPublisher) // after a.tel.mq is set: it reads it
	startPlan, err := a.warmPinned(ctx)
	if err != nil {
		return err
	}
	a.publishStartReport(runCtx)
	a.startLoops(runCtx, startPlan)
	total := a.tel.report.Timings.Total
	a.afterRequests(runCtx, func() { a.tel.recordStart(total) })
	if a.tel.prom != nil { // after the report's last write: its gauges read it
		a.startHTTP(runCtx)
	}
	return nil
}

// publishStartReport completes the startup report (the pinned models are
// warm) and queues it, retained, on an owned goroutine: queueing writes
// the outbox (an fsync), which a first request does not need to wait for
// (afterRequests).
// The final report (finishStart) waits for it.
func (a *Agent) publishStartReport(runCtx context.Context) {
	a.tel.report.Timings.Total = time.Since(a.opts.Started)
	a.tel.report.BootID = bootID(a.opts.HardwareRoot)
	a.tel.report.Process = processStats()
	rep := a.startReport() // read now: Start writes nothing after, but the models change
	done := make(chan struct{})
	a.tel.startPublished = done
	a.afterRequests(runCtx, func() {
		defer close(done)
		if err := a.tel.publish(topicStartup, true, rep); err != nil {
			a.log.Error("startup report not queued", "err", err)
		}
	})
}

// afterRequests runs a start's state write (an fsync) on an owned
// goroutine once the requests that came at the start leave the pool alone
// (waitQuiet), or when the agent stops. A goroutine in fsync keeps its Go
// P until the runtime's monitor takes it back, which after an idle spell
// takes up to 10 ms: a trace of a first start showed the request
// goroutines queued on that P behind three such writes, a 1 ms xor
// request answered 18 ms after Start.
func (a *Agent) afterRequests(runCtx context.Context, write func()) {
	since := time.Now()
	a.run.spawn(runCtx, func(ctx context.Context) {
		_ = a.waitQuiet(ctx, since) // on stop: written now, before the store closes
		write()
	})
}

// newReport starts the startup report with what the hardware says.
func (a *Agent) newReport() {
	hw := hardware.Read(a.opts.HardwareRoot) // once, before any goroutine starts
	a.tel.report = StartupReport{
		Schema: SchemaVersion, Agent: Version, Runtime: a.opts.RuntimeVersion,
		Hardware: hw, Fingerprint: hw.Fingerprint(), Models: []ModelReport{},
	}
}

// openedState is what openState found: the store, or why not.
type openedState struct {
	store *storage.Store
	rep   storage.OpenReport
	took  time.Duration
	err   error
}

// openState opens the state file; it touches nothing of the agent's, as
// the start goes on meanwhile (takeState takes its result).
func (a *Agent) openState() openedState {
	t0 := time.Now()
	store, rep, err := storage.Open(a.config().StateDir, storage.Options{
		LockTimeout:    a.config().State.LockTimeout,
		OutboxMaxCount: a.config().State.OutboxMaxMessages,
		OutboxMaxBytes: int64(a.config().State.OutboxMaxBytes),
		Logger:         a.log,
	})
	if err != nil {
		err = fmt.Errorf("open state: %w", err)
	}
	return openedState{store: store, rep: rep, took: time.Since(t0), err: err}
}

// takeState takes the opened state and reports what it found.
func (a *Agent) takeState(o openedState, small *smallfirst.Gate) error {
	if o.err != nil {
		return o.err
	}
	a.store = o.store
	a.reg.facts = newFileFacts(o.store, a.opts.BeforeModelRead, small)
	a.tel.report.State = o.rep
	a.tel.report.Timings.StateOpen = o.took
	if o.rep.Corruption != nil {
		a.tel.event("state_corrupted", map[string]any{"moved_to": o.rep.Corruption.MovedTo, "reason": o.rep.Corruption.Reason})
	}
	for _, c := range o.rep.Crashed {
		a.log.Error("delegate crashed the process last time; not trying it again", "model", c.Model, "delegate", c.Delegate)
		a.tel.event("delegate_crashed", map[string]any{"model": c.Model, "delegate": c.Delegate})
	}
	return nil
}

// newPool creates the interpreter pool; its load and eviction callbacks
// feed the retained status and telemetry.
func (a *Agent) newPool() {
	// Idle interpreters are the trim loop's (prewarm.keep_alive, which
	// keeps the mapping); the policy frees idle models only as "ttl".
	ttl := time.Duration(-1)
	if a.config().Pool.Eviction == "ttl" && a.config().Prewarm.KeepAlive > 0 {
		ttl = a.config().Prewarm.KeepAlive
	}
	policy, _ := tflite.NewPolicy(a.config().Pool.Eviction, tflite.PolicyOptions{TTL: ttl}) // validated
	a.pool = tflite.NewPool(tflite.PoolOptions{
		Policy:     policy,
		Budget:     a.mem.poolBudget(),
		PerModel:   a.config().Pool.InterpretersPerModel,
		PageIn:     a.config().pageIn(),
		Logger:     a.log,
		OnLoad:     func(tflite.LoadEvent) { a.ready.statusChanged() },
		Resolve:    a.reg.pending.resolve,
		SmallFirst: a.reg.pending.small,
		OnEvict: func(e tflite.EvictEvent) {
			a.ready.statusChanged()
			if e.Bytes >= tflite.HugeMin {
				a.mem.files.kickHugePages() // its file is no longer mapped
			}
			a.tel.eventLater("eviction", map[string]any{"model": e.ModelID, "bytes": e.Bytes, "reason": e.Reason})
		},
	})
}

// registerPinned registers the pinned models (the start warms them before
// READY); the others are registered by pending.registerRest, after
// requests are accepted, or by the first request for them (resolve).
func (a *Agent) registerPinned(ctx context.Context, models []ModelConfig) error {
	t := time.Now()
	for _, m := range models {
		if err := ctx.Err(); err != nil {
			return err
		}
		if m.Pinned {
			a.reg.pending.resolve(ctx, m.ID)
		}
	}
	a.tel.report.Timings.Restore = time.Since(t)
	return nil
}

func modelPaths(models []ModelConfig) []string {
	paths := make([]string, 0, len(models))
	for _, m := range models {
		paths = append(paths, m.Path)
	}
	return paths
}

// registerPending registers a claimed model: its file is read with no lock
// held, so registrations of other models (and reloads) do not wait on it.
func (a *Agent) registerPending(m *pendingModel) {
	defer a.reg.pending.finish(m)
	a.notify.Send("STATUS=registering " + m.cfg.ID)
	st := a.prep.registerFrom(m.cfg, m.cfg.Path, true)
	a.reg.prep.Lock()
	defer a.reg.prep.Unlock()
	if !a.reg.pending.wanted(m) {
		return // a reload registers what is configured now
	}
	st = a.prep.admitModel(st, false)
	a.setModel(st)
	switch {
	case st.servable && st.keepLater:
		// The copy's fsync and the versions record after the model
		// serves: a first answer needs neither. What it needs is read
		// here, under the prep lock: st changes later.
		a.upd.KeepLater(st.cfg.ID, st.digest, st.source, st.cfg.Path)
	case st.servable:
		a.upd.NoteServing(st.cfg.ID, st.digest)
	}
}

// setModel makes st the state of its model (called with the registry's prep lock held).
func (a *Agent) setModel(st *modelState) {
	queued := a.reg.set(st)
	a.ready.statusChanged()
	if queued {
		a.calib.kickCalibrator()
	}
}

// startMQTT connects to the brokers, waiting connect_wait for the first
// connection so the start is reported live; the outbox keeps everything
// if the broker is not there.
func (a *Agent) startMQTT(ctx, runCtx context.Context) error {
	brokers := a.config().MQTT.Brokers
	o := a.config().mqttOptions()
	if len(brokers) == 0 {
		var user, pw string
		var err error
		if brokers, user, pw, err = a.broker.start(a.config().localBrokerOptions(), a.log); err != nil {
			return err
		}
		if pw != "" { // its own broker (someone else's there: [mqtt] username, as before)
			o.Username, o.Password, o.PasswordFile = user, pw, ""
		}
	}
	if len(brokers) == 0 {
		return nil
	}
	t := time.Now()
	if p := a.mem.planned(); p != nil {
		o.QueueSize = p.MQTTQueue // shortened to its share of the limit
	}
	o.Brokers = brokers
	o.Logger = a.log
	o.Watch = map[string]func(string, []byte){}
	a.ha.options(&o)
	a.twins.options(&o)
	o.OnPanic = func(c mqtt.Command, v any, _ []byte) {
		a.tel.event("command_panic", map[string]any{"verb": c.Verb, "id": c.ID, "panic": fmt.Sprint(v)})
	}
	mq, err := mqtt.New(o, outbox{a.store}, a)
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	mq.SetStatus(a.ready.statusFields())
	a.tel.mq = mq
	if a.config().HomeAssistant.Enabled {
		a.run.spawn(runCtx, a.ha.loop)
	}
	a.run.spawn(runCtx, func(ctx context.Context) {
		if err := mq.Run(ctx); err != nil {
			a.log.Error("mqtt stopped", "err", err)
		}
	})
	select {
	case <-mq.Ready():
		a.tel.report.Timings.BrokerConnect = time.Since(t)
		a.tel.report.BrokerConnected = true
	case <-time.After(a.config().MQTT.ConnectWait):
		a.log.Warn("mqtt: broker not reachable yet; telemetry is queued", "brokers", brokers)
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// warmPinned runs the start's plan for the pinned models: the agent is not
// ready (READY=1) without them. The rest of the plan runs after.
func (a *Agent) warmPinned(ctx context.Context) (PlanResult, error) {
	t := time.Now()
	a.reg.pending.notePlanning()
	plan := a.planner.makePlan(power.Wake{Source: "start", At: a.opts.Now()})
	res := a.planner.runPlan(ctx, plan, true)
	if res.Cancelled {
		return res, ctx.Err()
	}
	a.tel.report.Plan = &res
	a.tel.report.Timings.Prewarm = time.Since(t)
	return res, nil
}

// finishStart warms the rest of the start's plan through the planner (a
// newer wake may replace it), then, once calibration is done too,
// publishes the startup report again with everything the start learned.
func (a *Agent) finishStart(ctx context.Context) {
	if a.reg.pending.wait(ctx) != nil { // the plan covers every model
		return
	}
	// The plan guesses what will be asked; requests arriving now say it.
	// Its loads and warm-up invokes wait until they are answered, rather
	// than share the cores with them (bounded: quietWaitMax).
	if a.waitQuiet(ctx, time.Now()) != nil {
		return
	}
	res, err := a.Wake(ctx, "start")
	if err != nil {
		return
	}
	a.reg.pending.setPlan(a.tel.report.Plan, res)
	a.calib.startPlanDone()
	select {
	case <-ctx.Done():
		return
	case <-a.Settled():
	}
	select {
	case <-ctx.Done():
		return
	case <-a.tel.startPublished:
	}
	rep := a.Report()
	rep.Final = true
	if err := a.tel.publish(topicStartup, true, rep); err != nil {
		a.log.Error("final startup report not queued", "err", err)
	}
}

// chain runs f, then g (either may be nil): connection hooks of several
// features share the client's one OnConnect.
func chain(f, g func()) func() {
	if f == nil {
		return g
	}
	return func() { f(); g() }
}
