package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// Options adjust an Agent beyond its configuration; the zero value is what
// a device uses. Tests set them to simulate another board or runtime.
type Options struct {
	// HardwareRoot is where /proc is read from; "" means "/".
	HardwareRoot string
	// RuntimeVersion overrides the linked TFLite version in validity keys.
	RuntimeVersion string
	// Started is when the process started; zero means when New was called.
	Started time.Time
	// Memory reads the process's and its cgroup's memory; nil means
	// power.ReadMemory("/").
	Memory func() power.Memory
	// System reads CPU load and memory for the energy policy; nil means
	// the real machine.
	System func() power.System
	// Clock is the kernel clock pair for resume detection; nil means real.
	Clock power.Clock
	// Now is the wall clock; nil means time.Now.
	Now func() time.Time
	// Rand draws the policy's stagger; nil means math/rand.
	Rand func() float64
	// BeforePrewarm, when set, runs before each model's prewarm (tests use
	// it to hold a warm-up and act during it).
	BeforePrewarm func(ctx context.Context, model string)
	// BeforeCalibrate, when set, runs inside each model's background
	// calibration, before its first measuring load (tests hold or crash it
	// there).
	BeforeCalibrate func(ctx context.Context, model string)
	// ShutdownTimeout bounds Close in Run. Default 10s.
	ShutdownTimeout time.Duration
	// ScheduleEvery is how often the schedule looks ahead. Default 1m.
	ScheduleEvery time.Duration
	// Ticks, when set and returning a channel for a loop ("schedule",
	// "trim", "resume", "memory"), drives that loop instead of its ticker:
	// a test sends a tick and knows the loop ran once it can send the next.
	Ticks func(loop string) <-chan time.Time
}

// Agent is the running daemon: state, pool and what it learned at start.
type Agent struct {
	cfg  atomic.Pointer[Config] // replaced whole by Reload; read with config()
	opts Options
	log  *slog.Logger

	store    *storage.Store
	pool     *tflite.Pool
	baseline int64        // RSS at start, before any model (MemoryReport)
	mq       *mqtt.Client // nil without brokers
	report   StartupReport
	usage    usageBatch

	// prepMu serialises preparing models (start, reload, applying what the
	// calibrator measured). It is never held while a model is loaded or
	// measured, so requests, plans and status never wait behind one.
	prepMu sync.Mutex

	// mapsMu guards models and order: held only to read or swap states.
	mapsMu sync.Mutex
	models map[string]*modelState // by id, failed ones included
	order  []string               // ids as configured, for reports

	// wakeMu guards seen: models asked for since the last wake.
	wakeMu sync.Mutex
	seen   map[string]bool

	wakes       chan wakeRequest
	laterEvents chan queuedEvent // raised on hot paths, written by eventWriter

	calKick    chan struct{} // the calibrator may have work (cap 1)
	planning   atomic.Int32  // plans warming now: calibration waits for them
	statusKick chan struct{} // readiness may have changed (cap 1)

	// settleMu guards settled and startPlanDone.
	settleMu      sync.Mutex
	settled       chan struct{}
	startPlanDone bool

	notify notifier
	hb     *heartbeats

	// warmMu guards warming: family variants being warmed in the background.
	warmMu  sync.Mutex
	warming map[string]bool

	// The agent's own goroutines (MQTT, metrics, usage, planner) run under
	// runCtx and stop with stop.
	runCtx context.Context
	stop   func()
	wg     sync.WaitGroup

	// tunedMu guards tuned: the loops whose settings a reload may change.
	tunedMu sync.Mutex
	tuned   tunedLoops
}

// New prepares an agent; it does no I/O.
func New(cfg Config, log *slog.Logger, o Options) *Agent {
	if o.HardwareRoot == "" {
		o.HardwareRoot = "/"
	}
	if o.RuntimeVersion == "" {
		o.RuntimeVersion = tflite.RuntimeVersion()
	}
	if o.Started.IsZero() {
		o.Started = time.Now()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.ScheduleEvery <= 0 {
		o.ScheduleEvery = time.Minute
	}
	a := &Agent{opts: o, log: log, models: map[string]*modelState{}, seen: map[string]bool{}, stop: func() {},
		wakes: make(chan wakeRequest, 8), laterEvents: make(chan queuedEvent, 256), calKick: make(chan struct{}, 1), statusKick: make(chan struct{}, 1),
		settled: make(chan struct{}), warming: map[string]bool{}, notify: notifier{log: log}, hb: newHeartbeats(time.Second)}
	a.cfg.Store(&cfg)
	return a
}

// config is the configuration in force (Reload may replace it).
func (a *Agent) config() *Config { return a.cfg.Load() }

// powerReader and meter follow the configuration in force.
func (a *Agent) powerReader() *power.Reader {
	c := a.config()
	return power.NewReader(power.Options{Root: c.Power.SysfsRoot, System: a.opts.System, Now: a.opts.Now})
}

func (a *Agent) meter() power.Meter {
	c := a.config()
	return power.Meter{Root: c.Power.SysfsRoot, WattsPerCPUSecond: c.Power.WattsPerCPUSecond}
}

// spawn runs f on a goroutine the agent owns until Close.
func (a *Agent) spawn(ctx context.Context, f func(context.Context)) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f(ctx)
	}()
}

// Start makes every configured model servable at once, then warms the
// pinned ones; everything else (warming the rest, calibrating) goes on in
// the background. Sinks start before sources: state, pool and models
// exist before MQTT can deliver a command.
func (a *Agent) Start(ctx context.Context) error {
	if err := a.openState(); err != nil {
		return err
	}
	models, err := resolveModels(*a.config(), a.log)
	if err != nil {
		return err
	}
	a.baseline = a.memory().RSSBytes
	a.newPool()
	if err := a.registerAll(ctx, models); err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	a.stop = stop
	a.warmMu.Lock()
	a.runCtx = runCtx
	a.warmMu.Unlock()
	if err := a.startMQTT(ctx, runCtx); err != nil {
		return err
	}
	a.spawn(runCtx, a.statusPublisher) // after a.mq is set: it reads it
	startPlan, err := a.warmPinned(ctx)
	if err != nil {
		return err
	}
	a.report.Timings.Total = time.Since(a.opts.Started)
	a.report.BootID = bootID(a.opts.HardwareRoot)
	a.report.Process = processStats()
	if err := a.publish(topicStartup, true, a.Report()); err != nil {
		a.log.Error("startup report not queued", "err", err)
	}
	a.startLoops(runCtx, startPlan)
	return nil
}

// openState opens the state file and reports what it found.
func (a *Agent) openState() error {
	t0 := time.Now()
	a.notify.send("STATUS=opening state")
	hw := ReadHardware(a.opts.HardwareRoot)
	a.report = StartupReport{
		Schema: SchemaVersion, Agent: Version, Runtime: a.opts.RuntimeVersion,
		Hardware: hw, Fingerprint: hw.Fingerprint(), Models: []ModelReport{},
	}
	store, rep, err := storage.Open(a.config().StateDir, storage.Options{
		LockTimeout:    a.config().State.LockTimeout,
		OutboxMaxCount: a.config().State.OutboxMaxMessages,
		OutboxMaxBytes: int64(a.config().State.OutboxMaxBytes),
		Logger:         a.log,
	})
	if err != nil {
		return fmt.Errorf("open state: %w", err)
	}
	a.store = store
	a.report.State = rep
	a.report.Timings.StateOpen = time.Since(t0)
	if rep.Corruption != nil {
		a.event("state_corrupted", map[string]any{"moved_to": rep.Corruption.MovedTo, "reason": rep.Corruption.Reason})
	}
	for _, c := range rep.Crashed {
		a.log.Error("delegate crashed the process last time; not trying it again", "model", c.Model, "delegate", c.Delegate)
		a.event("delegate_crashed", map[string]any{"model": c.Model, "delegate": c.Delegate})
	}
	return nil
}

// newPool creates the interpreter pool; its load and eviction callbacks
// feed the retained status and telemetry.
func (a *Agent) newPool() {
	a.pool = tflite.NewPool(tflite.PoolOptions{
		Budget:   a.poolBudget(),
		PerModel: a.config().Pool.InterpretersPerModel,
		PageIn:   a.config().pageIn(),
		Logger:   a.log,
		OnLoad:   func(tflite.LoadEvent) { a.statusChanged() },
		OnEvict: func(e tflite.EvictEvent) {
			a.statusChanged()
			a.eventLater("eviction", map[string]any{"model": e.ModelID, "bytes": e.Bytes, "reason": e.Reason})
		},
	})
}

// registerAll registers every configured model (no model is loaded).
func (a *Agent) registerAll(ctx context.Context, models []ModelConfig) error {
	t := time.Now()
	a.prepMu.Lock()
	defer a.prepMu.Unlock()
	for _, m := range models {
		if err := ctx.Err(); err != nil {
			return err
		}
		a.notify.send("STATUS=registering " + m.ID)
		a.setModel(a.admitModel(a.register(m), false))
	}
	a.report.Timings.Restore = time.Since(t)
	return nil
}

// setModel makes st the state of its model (called with prepMu held).
func (a *Agent) setModel(st *modelState) {
	a.mapsMu.Lock()
	if _, ok := a.models[st.cfg.ID]; !ok {
		a.order = append(a.order, st.cfg.ID)
	}
	a.models[st.cfg.ID] = st
	a.mapsMu.Unlock()
	a.statusChanged()
	if st.queued {
		a.kickCalibrator()
	}
}

// startMQTT connects to the brokers, waiting connect_wait for the first
// connection so the start is reported live; the outbox keeps everything
// if the broker is not there.
func (a *Agent) startMQTT(ctx, runCtx context.Context) error {
	if len(a.config().MQTT.Brokers) == 0 {
		return nil
	}
	t := time.Now()
	o := a.config().mqttOptions()
	o.Logger = a.log
	o.OnPanic = func(c mqtt.Command, v any, _ []byte) {
		a.event("command_panic", map[string]any{"verb": c.Verb, "id": c.ID, "panic": fmt.Sprint(v)})
	}
	mq, err := mqtt.New(o, outbox{a.store}, a)
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	mq.SetStatus(a.statusFields())
	a.mq = mq
	a.spawn(runCtx, func(ctx context.Context) {
		if err := mq.Run(ctx); err != nil {
			a.log.Error("mqtt stopped", "err", err)
		}
	})
	select {
	case <-mq.Ready():
		a.report.Timings.BrokerConnect = time.Since(t)
		a.report.BrokerConnected = true
	case <-time.After(a.config().MQTT.ConnectWait):
		a.log.Warn("mqtt: broker not reachable yet; telemetry is queued", "brokers", a.config().MQTT.Brokers)
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// warmPinned runs the start's plan for the pinned models: the agent is not
// ready (READY=1) without them. The rest of the plan runs after.
func (a *Agent) warmPinned(ctx context.Context) (PlanResult, error) {
	t := time.Now()
	plan := a.makePlan(power.Wake{Source: "start", At: a.opts.Now()})
	res := a.runPlan(ctx, plan, true)
	if res.Cancelled {
		return res, ctx.Err()
	}
	a.report.Plan = &res
	a.report.Timings.Prewarm = time.Since(t)
	return res, nil
}

// finishStart warms the rest of the start's plan through the planner (a
// newer wake may replace it), then, once calibration is done too,
// publishes the startup report again with everything the start learned.
func (a *Agent) finishStart(ctx context.Context) {
	if _, err := a.Wake(ctx, "start"); err != nil {
		return
	}
	a.settleMu.Lock()
	a.startPlanDone = true
	a.settleMu.Unlock()
	a.kickCalibrator()
	select {
	case <-ctx.Done():
		return
	case <-a.Settled():
	}
	rep := a.Report()
	rep.Final = true
	if err := a.publish(topicStartup, true, rep); err != nil {
		a.log.Error("final startup report not queued", "err", err)
	}
}

// Pool is the interpreter pool (after Start).
func (a *Agent) Pool() *tflite.Pool { return a.pool }

// Store is the state (after Start).
func (a *Agent) Store() *storage.Store { return a.store }

// Report is what Start found and did, with what the background work
// (calibration, warming after READY) has learned since.
func (a *Agent) Report() StartupReport {
	rep := a.report
	loads := map[string]tflite.ModelStatus{}
	if a.pool != nil {
		for _, st := range a.pool.Models() {
			loads[st.ID] = st
		}
		rep.Pool = a.pool.Stats()
	}
	a.mapsMu.Lock()
	rep.Models = make([]ModelReport, 0, len(a.order))
	for _, id := range a.order {
		mr := a.models[id].report
		if st, ok := loads[id]; ok && st.Loads > 0 {
			l := st.LastLoad
			mr.Load = &l
		}
		rep.Models = append(rep.Models, mr)
	}
	a.mapsMu.Unlock()
	return rep
}

// Close stops the sources first: MQTT (answering queued commands and
// publishing "offline"), metrics and usage (flushed), then frees the pool,
// then closes the state. Safe to call more than once.
func (a *Agent) Close() error {
	a.stop()
	a.wg.Wait()
	var errs []error
	if a.pool != nil {
		errs = append(errs, a.pool.Close())
	}
	a.drainEvents()
	if a.store != nil {
		errs = append(errs, a.store.Close())
		a.store = nil
	}
	return errors.Join(errs...)
}

// RunOptions are what `run` adds to an agent: files to report to and to
// reload from.
type RunOptions struct {
	ReportPath string // write the startup report here once ready
	// Reload reads the configuration again on SIGHUP; nil means SIGHUP
	// only logs.
	Reload func() (Config, error)
	// LogLevel, when set, is adjusted to the reloaded log_level.
	LogLevel *slog.LevelVar
}

// Run is the daemon: start (telling systemd READY only once the pinned
// models are warm), serve until ctx is cancelled, then stop in bounded time.
// SIGHUP reloads the configuration, SIGUSR1 wakes. With WATCHDOG_USEC set,
// systemd is pinged while the main loops prove they are alive.
func Run(ctx context.Context, cfg Config, log *slog.Logger, o Options, ro RunOptions) error {
	// Before anything else: SIGUSR1 and SIGHUP would otherwise terminate the
	// process; what arrives during start is handled once ready.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(sigs)
	a := New(cfg, log, o)
	interval, _ := daemon.SdWatchdogEnabled(false)
	if interval > 0 {
		a.hb = newHeartbeats(min(time.Second, interval/4))
	}
	a.hb.beat("main")
	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	if interval > 0 {
		go watchdog(wdCtx, interval, a.hb, a.notify)
	}
	if err := a.Start(ctx); err != nil {
		_ = a.shutdown()
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	rep := a.Report()
	log.Info("ready", "models", len(rep.Models), "warm", rep.Pool.WarmModels, "bytes_in_use", rep.Pool.BytesInUse,
		"budget", rep.Pool.Budget, "startup_ms", ms(rep.Timings.Total))
	a.notify.send(fmt.Sprintf("READY=1\nSTATUS=ready: %d of %d models warm", rep.Pool.WarmModels, len(rep.Models)))
	if ro.ReportPath != "" {
		if err := writeJSONFile(ro.ReportPath, rep); err != nil {
			log.Error("startup report not written", "path", ro.ReportPath, "err", err)
		}
	}
	// Reloads run on their own goroutine: a reload that registers models
	// must never stop this loop, which proves liveness to the watchdog.
	// SIGHUPs that arrive during one coalesce into one more.
	reloads := make(chan struct{}, 1)
	var reloader sync.WaitGroup
	reloader.Add(1)
	go func() {
		defer reloader.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-reloads:
				a.reloadFromSignal(ctx, ro)
			}
		}
	}()
	beat := time.NewTicker(a.hb.period)
	defer beat.Stop()
	for ctx.Err() == nil {
		select {
		case <-beat.C:
			a.hb.beat("main")
		case sig := <-sigs:
			a.hb.beat("main")
			if sig == syscall.SIGUSR1 {
				log.Info("SIGUSR1: wake")
				a.PostWake("signal")
				continue
			}
			select {
			case reloads <- struct{}{}:
			default:
			}
		case <-ctx.Done():
		}
	}
	reloader.Wait()
	log.Info("stopping", "reason", context.Cause(ctx))
	a.notify.send("STOPPING=1\nSTATUS=stopping")
	stopWatchdog()
	return a.shutdown()
}

// reloadFromSignal handles SIGHUP.
func (a *Agent) reloadFromSignal(ctx context.Context, ro RunOptions) {
	if ro.Reload == nil {
		a.log.Warn("SIGHUP: no configuration file to reload")
		return
	}
	a.notify.send("RELOADING=1\nSTATUS=reloading")
	defer a.notify.send("READY=1\nSTATUS=reloaded")
	next, err := ro.Reload()
	if err != nil {
		a.log.Error("SIGHUP: configuration not reloaded; keeping the current one", "err", err)
		return
	}
	res, err := a.Reload(ctx, next)
	if err != nil {
		a.log.Error("SIGHUP: reload failed", "err", err)
		return
	}
	if ro.LogLevel != nil {
		var l slog.Level
		if l.UnmarshalText([]byte(next.LogLevel)) == nil {
			ro.LogLevel.Set(l)
		}
	}
	a.log.Info("reloaded", "added", res.Added, "removed", res.Removed, "changed", res.Changed,
		"unchanged", res.Unchanged, "failed", res.Failed, "needs_restart", res.NeedsRestart)
}

// shutdown closes within ShutdownTimeout; past it, the process exits anyway
// and the state file's own crash safety holds.
func (a *Agent) shutdown() error {
	done := make(chan error, 1)
	go func() { done <- a.Close() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		a.log.Info("stopped")
		return nil
	case <-time.After(a.opts.ShutdownTimeout):
		return fmt.Errorf("stop: not done within %v", a.opts.ShutdownTimeout)
	}
}

func writeJSONFile(path string, v any) error {
	b, err := marshalIndent(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
