package agent

import (
	"context"
	"errors"
	"log/slog"
	"math/rand"
	"os"
	"sync/atomic"
	"time"

	"github.com/edge-agent/edge-agent/agent/hardware"
	"github.com/edge-agent/edge-agent/agent/observe"
	"github.com/edge-agent/edge-agent/agent/sdnotify"
	"github.com/edge-agent/edge-agent/agent/update"
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
	// BeforeModelRead, when set, runs before a model's file is read to
	// learn its facts (tests hold it there, as a slow or stuck storage
	// would, or count the reads).
	BeforeModelRead func(path string)
	// BeforeEventWrite, when set, runs before an event is written to the
	// state's outbox (tests hold the write there, as a slow fsync would).
	BeforeEventWrite func(kind string)
	// BeforeVersionKeep, when set, runs before a start keeps a model's
	// version under the state dir, after the model is admitted (tests
	// hold it there).
	BeforeVersionKeep func(model string)
	// ShutdownTimeout bounds Close in Run. Default 10s.
	ShutdownTimeout time.Duration
	// ScheduleEvery is how often the schedule looks ahead. Default 1m.
	ScheduleEvery time.Duration
	// Ticks, when set and returning a channel for a loop ("schedule",
	// "trim", "resume", "memory", "keep-alive"), drives that loop instead
	// of its ticker (the keep-alive loop still runs when kicked):
	// a test sends a tick and knows the loop ran once it can send the next.
	Ticks func(loop string) <-chan time.Time
}

// Agent is the running daemon: state, pool and what it learned at start.
type Agent struct {
	// broker is the embedded broker when the agent serves MQTT itself.
	broker embeddedBroker
	// ha announces the agent to Home Assistant ([homeassistant]).
	ha *homeAssistant
	// twins shares calibrations with the fleet's twins (twins.go).
	twins *twins
	// tel is what the agent tells: events, the startup report, metrics,
	// usage, latencies and Prometheus, and the MQTT client they go out by.
	tel  *telemetry
	cfg  atomic.Pointer[Config] // replaced whole by Reload; read with config()
	opts Options
	log  *slog.Logger

	store *storage.Store
	pool  *tflite.Pool
	mem   *memoryKeeper // the memory plan, decodes, pressure, the page cache
	ready *readiness    // the models' readiness and the retained status

	// reg is the models: states, order, the start's pending ones, file
	// facts, and the two locks that guard preparing and swapping them.
	reg *registry
	// prep settles how each model is served (prepare.go).
	prep *preparer

	// observers learn from every finished request (observers.go); wake
	// tracks the first request per id after a wake.
	observers observe.List
	wake      *wakeTracker

	// planner warms models on wakes; loops runs the periodic loops and
	// restarts the tuned ones on a reload.
	planner *wakePlanner
	loops   *loopRunner
	// calib measures models in the background and keeps Settled.
	calib *calibrator

	notify sdnotify.Notifier
	hb     *sdnotify.Heartbeats

	// run is the agent's own goroutines: they run from Start to Close.
	run goroutines

	upd   *update.Manager // model updates: staging, checks, rollback
	tiers *tiers          // fast-path agreement of families
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
	a := &Agent{opts: o, log: log, reg: newRegistry(), wake: newWakeTracker(),
		notify: sdnotify.Notifier{Log: log}, hb: sdnotify.NewHeartbeats(time.Second)}
	a.upd = newUpdates(a, cfg)
	a.tiers = newTiers()
	// Before anything that is given a.tel's methods.
	a.tel = newTelemetry(telemetryDeps{log: log, store: a.Store, pool: a.Pool, started: o.Started,
		memory: func() MemoryReport { return a.mem.report() },
		tiers:  a.tiers.snapshot, power: func() power.State { return a.powerReader().Read() }, exporter: cfg.httpListen() != "",
		beforeWrite: o.BeforeEventWrite})
	a.mem = newMemoryKeeper(memoryDeps{log: log, config: a.config, pool: a.Pool, read: o.Memory, event: a.tel.event,
		every: func(ctx context.Context, name string, interval time.Duration, f func()) {
			a.loops.every(ctx, name, interval, f)
		}},
		newPageCache(pageCacheDeps{log: log, config: a.config, pool: a.Pool, store: a.Store, settled: a.Settled, event: a.tel.event}))
	a.ready = newReadiness(readinessDeps{pool: a.Pool, mq: func() *mqtt.Client { return a.tel.mq },
		pending: func() []string { return a.reg.pending.ids() },
		eachModel: func(f func(string, *modelState)) {
			a.reg.locked(func() {
				for id, st := range a.reg.models {
					f(id, st)
				}
			})
		},
		withModel: func(id string, f func(*modelState)) {
			a.reg.locked(func() {
				if st, ok := a.reg.models[id]; ok {
					f(st)
				}
			})
		}})
	a.prep = &preparer{d: preparerDeps{log: log, config: a.config, runtime: o.RuntimeVersion,
		fingerprint: func() string { return a.tel.report.Fingerprint }, store: a.Store, pool: a.Pool,
		facts: func() *fileFacts { return a.reg.facts }, versions: a.upd, event: a.tel.event}}
	a.ha = newHomeAssistant(homeAssistantDeps{log: log, config: a.config, hw: func() hardware.Info { return a.tel.report.Hardware }, lat: a.tel.lat, pool: a.Pool,
		mq: func() *mqtt.Client { return a.tel.mq }, memory: a.mem.memory, power: a.powerReader, publish: a.tel.publish})
	a.cfg.Store(&cfg)
	a.loops = &loopRunner{ticks: o.Ticks, spawn: a.run.spawn, settings: func() tunedSettings { return a.config().tunedSettings() }}
	a.planner = newWakePlanner(plannerDeps{log: log, config: a.config, pool: a.Pool, store: a.Store,
		power: a.powerReader, meter: a.meter, calibrations: a.ready.calibrations, now: o.Now, clock: o.Clock, rand: o.Rand,
		beforePrewarm: o.BeforePrewarm, scheduleEvery: o.ScheduleEvery, loop: a.loops.kicked, spawn: a.run.spawn,
		event: a.tel.event, notify: a.notify.Send, noteLoad: a.ready.noteLoad, warmed: a.checkSamplesFor,
		countWake: a.tel.prom.Wake, // nil when off: counts nothing
		woke:      a.wake.woke,     // a new wake: first requests count from here
	})
	a.twins = newTwins(twinsDeps{log: log, config: a.config, event: a.tel.event, runtimeVersion: o.RuntimeVersion,
		started: o.Started, now: o.Now, rand: o.Rand, fingerprint: func() string { return a.tel.report.Fingerprint },
		store: a.Store, pool: a.Pool,
		publish: func(ctx context.Context, topic string, b []byte) error {
			return a.tel.mq.PublishNow(ctx, topic, true, b)
		},
		models: func() []modelState {
			var states []modelState
			a.reg.each(func(st *modelState) { states = append(states, *st) })
			return states
		}})
	a.calib = newCalibrator(calibratorDeps{log: log, config: a.config, power: a.powerReader, now: o.Now,
		started: o.Started, beforeCalibrate: o.BeforeCalibrate, store: a.Store, pool: a.Pool, planBusy: a.planner.busy,
		reg:           a.reg,
		statusChanged: a.ready.statusChanged, event: a.tel.event, observeTime: a.tel.prom.Calibrated,
		settleDelegates: a.prep.settleDelegates, restoreCalibration: a.prep.restoreCalibration, calibrationKey: a.prep.calibrationKey,
		failModel: a.prep.failModel, modelSpec: a.prep.modelSpec,
		adoptFleet: a.twins.adopt, verifyFleet: a.twins.verify, fleetPublish: a.twins.publish})
	a.twins.calib = a.calib // verifying a twin's record measures through the calibrator
	a.observers = a.requestObservers()
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

// Pool is the interpreter pool (after Start).
func (a *Agent) Pool() *tflite.Pool { return a.pool }

// Store is the state (after Start).
func (a *Agent) Store() *storage.Store { return a.store }

// Report is what Start found and did, with what the background work
// (calibration, warming after READY) has learned since.
func (a *Agent) Report() StartupReport {
	if p := a.reg.pending; p != nil {
		<-p.all // every configured model in it
	}
	return a.startReport()
}

// startReport is Report as it stands: without the models not registered
// yet.
func (a *Agent) startReport() StartupReport {
	// The report is written only by Start, before it spawns anything that
	// calls Report (the final report, the metrics' gauges), and never
	// after: it needs no lock. What changes later is read under the
	// pool's and the registry's locks below.
	rep := a.tel.report
	loads := map[string]tflite.ModelStatus{}
	if a.pool != nil {
		for _, st := range a.pool.Models() {
			loads[st.ID] = st
		}
		rep.Pool = a.pool.Stats()
	}
	if p := a.reg.pending.startPlan(); p != nil {
		rep.Plan = p // the start planned before every model was registered
	}
	a.reg.each(func(st *modelState) {
		mr := st.report
		if s, ok := loads[st.cfg.ID]; ok && s.Loads > 0 {
			l := s.LastLoad
			mr.Load = &l
		}
		rep.Models = append(rep.Models, mr)
	})
	return rep
}

// Close stops the sources first: MQTT (answering queued commands and
// publishing "offline"), metrics and usage (flushed), then frees the pool,
// then closes the state. Safe to call more than once.
func (a *Agent) Close() error {
	a.run.close()
	var errs []error
	if err := a.broker.close(); err != nil { // after the agent's own client has gone
		errs = append(errs, err)
	}
	if a.pool != nil {
		a.saveLearnedCosts()
		errs = append(errs, a.pool.Close())
	}
	a.tel.drainEvents()
	if a.store != nil {
		errs = append(errs, a.store.Close())
		a.store = nil
	}
	return errors.Join(errs...)
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
