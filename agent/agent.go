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
	"syscall"
	"time"

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
}

// Agent is the running daemon: state, pool and what it learned at start.
type Agent struct {
	cfg  Config
	opts Options
	log  *slog.Logger

	store  *storage.Store
	pool   *tflite.Pool
	mq     *mqtt.Client // nil without brokers
	report StartupReport
	usage  usageBatch

	// prepMu serialises preparing models (start, reload) and guards labels.
	prepMu sync.Mutex
	labels map[string][]string

	// wakeMu guards seen: models asked for since the last wake.
	wakeMu sync.Mutex
	seen   map[string]bool

	power *power.Reader
	meter power.Meter
	wakes chan wakeRequest
	calib map[string]storage.Calibration // by model id; guarded by prepMu

	// warmMu guards warming: family variants being warmed in the background.
	warmMu  sync.Mutex
	warming map[string]bool

	// The agent's own goroutines (MQTT, metrics, usage, planner) run under
	// runCtx and stop with stop.
	runCtx context.Context
	stop   func()
	wg     sync.WaitGroup
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
	return &Agent{cfg: cfg, opts: o, log: log, labels: map[string][]string{}, seen: map[string]bool{}, stop: func() {},
		power: power.NewReader(power.Options{Root: cfg.Power.SysfsRoot, System: o.System, Now: o.Now}),
		meter: power.Meter{Root: cfg.Power.SysfsRoot, WattsPerCPUSecond: cfg.Power.WattsPerCPUSecond},
		wakes: make(chan wakeRequest, 8), calib: map[string]storage.Calibration{}, warming: map[string]bool{}}
}

// spawn runs f on a goroutine the agent owns until Close.
func (a *Agent) spawn(ctx context.Context, f func(context.Context)) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f(ctx)
	}()
}

// Start opens the state, restores or measures what it knows about every
// model, and warms them, pinned first. A bad model is reported and skipped.
func (a *Agent) Start(ctx context.Context) error {
	t0 := time.Now()
	hw := ReadHardware(a.opts.HardwareRoot)
	a.report = StartupReport{
		Schema: SchemaVersion, Agent: Version, Runtime: a.opts.RuntimeVersion,
		Hardware: hw, Fingerprint: hw.Fingerprint(), Models: []ModelReport{},
	}
	store, rep, err := storage.Open(a.cfg.StateDir, storage.Options{
		LockTimeout:    a.cfg.State.LockTimeout,
		OutboxMaxCount: a.cfg.State.OutboxMaxMessages,
		OutboxMaxBytes: int64(a.cfg.State.OutboxMaxBytes),
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

	runCtx, stop := context.WithCancel(context.Background())
	a.stop = stop
	a.warmMu.Lock()
	a.runCtx = runCtx
	a.warmMu.Unlock()
	if len(a.cfg.MQTT.Brokers) > 0 {
		t := time.Now()
		o := a.cfg.mqttOptions()
		o.Logger = a.log
		mq, err := mqtt.New(o, outbox{a.store}, a)
		if err != nil {
			return fmt.Errorf("mqtt: %w", err)
		}
		a.mq = mq
		a.spawn(runCtx, func(ctx context.Context) {
			if err := mq.Run(ctx); err != nil {
				a.log.Error("mqtt stopped", "err", err)
			}
		})
		// Wait a little for the broker so the start is reported live; the
		// outbox keeps everything if it is not there.
		select {
		case <-mq.Ready():
			a.report.Timings.BrokerConnect = time.Since(t)
			a.report.BrokerConnected = true
		case <-time.After(a.cfg.MQTT.ConnectWait):
			a.log.Warn("mqtt: broker not reachable yet; telemetry is queued", "brokers", a.cfg.MQTT.Brokers)
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	models, err := resolveModels(a.cfg, a.log)
	if err != nil {
		return err
	}
	a.pool = tflite.NewPool(tflite.PoolOptions{
		Budget:   int64(a.cfg.Pool.Budget),
		PerModel: a.cfg.Pool.InterpretersPerModel,
		PageIn:   a.cfg.pageIn(),
		Logger:   a.log,
		OnEvict: func(e tflite.EvictEvent) {
			a.event("eviction", map[string]any{"model": e.ModelID, "bytes": e.Bytes, "reason": e.Reason})
		},
	})

	t1 := time.Now()
	a.prepMu.Lock()
	for _, m := range models {
		if ctx.Err() != nil {
			a.prepMu.Unlock()
			return ctx.Err()
		}
		mr := a.prepare(m)
		a.report.Models = append(a.report.Models, mr)
	}
	a.prepMu.Unlock()
	a.report.Timings.Restore = time.Since(t1)

	t2 := time.Now()
	startPlan := a.runPlan(ctx, a.makePlan(power.Wake{Source: "start", At: a.opts.Now()}))
	if startPlan.Cancelled {
		return ctx.Err()
	}
	a.report.Plan = &startPlan
	loads := map[string]tflite.ModelStatus{}
	for _, st := range a.pool.Models() {
		loads[st.ID] = st
	}
	for i := range a.report.Models {
		mr := &a.report.Models[i]
		if st, ok := loads[mr.ID]; ok && st.Loads > 0 {
			rep := st.LastLoad
			mr.Load = &rep
		}
	}
	for _, f := range startPlan.Failed {
		for i := range a.report.Models {
			if a.report.Models[i].ID == f && a.report.Models[i].Error == nil {
				a.report.Models[i].Error = &ErrorReport{Code: "prewarm_failed", Message: "warm-up failed; see the log"}
			}
		}
	}
	a.report.Timings.Prewarm = time.Since(t2)
	a.report.Timings.Total = time.Since(a.opts.Started)
	a.report.Pool = a.pool.Stats()
	a.report.BootID = bootID(a.opts.HardwareRoot)
	a.report.Process = processStats()
	if err := a.publish(topicStartup, true, a.report); err != nil {
		a.log.Error("startup report not queued", "err", err)
	}
	a.spawn(runCtx, func(ctx context.Context) {
		loop(ctx, a.cfg.MQTT.MetricsInterval, func() {
			if err := a.publish(topicMetrics, false, a.metrics()); err != nil {
				a.log.Error("metrics not queued", "err", err)
			}
		})
	})
	a.spawn(runCtx, func(ctx context.Context) {
		loop(ctx, time.Minute, func() {
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
	a.spawn(runCtx, func(ctx context.Context) {
		resumes := make(chan power.Wake, 1)
		go func() {
			for w := range resumes {
				a.log.Info("resumed from suspend", "slept", w.Slept)
				a.PostWake("resume")
			}
		}()
		power.NewResumeDetector(a.opts.Clock, 0).Run(ctx, a.cfg.Prewarm.ResumeCheck, a.opts.Now, resumes)
		close(resumes)
	})
	a.spawn(runCtx, a.scheduleLoop)
	a.spawn(runCtx, a.trimLoop)
	return nil
}

// Pool is the interpreter pool (after Start).
func (a *Agent) Pool() *tflite.Pool { return a.pool }

// Store is the state (after Start).
func (a *Agent) Store() *storage.Store { return a.store }

// Report is what Start found and did.
func (a *Agent) Report() StartupReport { return a.report }

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
	if a.store != nil {
		errs = append(errs, a.store.Close())
		a.store = nil
	}
	return errors.Join(errs...)
}

// Run is the daemon: start, write the startup report when asked, serve
// until ctx is cancelled, then free everything.
func Run(ctx context.Context, cfg Config, log *slog.Logger, o Options, reportPath string) error {
	a := New(cfg, log, o)
	defer a.Close()
	if err := a.Start(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	rep := a.Report()
	log.Info("ready", "models", len(rep.Models), "warm", rep.Pool.WarmModels, "bytes_in_use", rep.Pool.BytesInUse,
		"budget", rep.Pool.Budget, "startup_ms", ms(rep.Timings.Total))
	if reportPath != "" {
		if err := writeJSONFile(reportPath, rep); err != nil {
			log.Error("startup report not written", "path", reportPath, "err", err)
		}
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	for ctx.Err() == nil {
		select {
		case <-usr1:
			log.Info("SIGUSR1: wake")
			a.PostWake("signal")
		case <-ctx.Done():
		}
	}
	log.Info("stopping", "reason", context.Cause(ctx))
	st := a.pool.Stats()
	if err := a.Close(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	log.Info("stopped", "loads", st.Loads, "evictions", st.Evictions)
	return nil
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
