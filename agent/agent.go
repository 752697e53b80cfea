package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"time"

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
}

// Agent is the running daemon: state, pool and what it learned at start.
type Agent struct {
	cfg  Config
	opts Options
	log  *slog.Logger

	store  *storage.Store
	pool   *tflite.Pool
	report StartupReport
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
	return &Agent{cfg: cfg, opts: o, log: log}
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
			a.log.Info("model evicted", "model", e.ModelID, "bytes", e.Bytes, "reason", e.Reason)
		},
	})

	t1 := time.Now()
	for _, m := range models {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		mr := a.prepare(m)
		a.report.Models = append(a.report.Models, mr)
	}
	a.report.Timings.Restore = time.Since(t1)

	t2 := time.Now()
	order := make([]int, len(a.report.Models))
	for i := range order {
		order[i] = i
	}
	// Pinned models first: they are what the device must always answer with.
	sort.SliceStable(order, func(i, j int) bool { return a.report.Models[order[i]].Pinned && !a.report.Models[order[j]].Pinned })
	for _, i := range order {
		mr := &a.report.Models[i]
		if mr.Error != nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rep, loaded, err := a.pool.Prewarm(ctx, mr.ID)
		switch {
		case errors.Is(err, context.Canceled):
			return err
		case err != nil:
			mr.Error = errorReport(err)
			a.log.Error("model not warmed", "model", mr.ID, "code", tflite.Code(err), "err", err)
		case loaded:
			mr.Load = &rep
			s := rep.Stages
			a.log.Info("model warm", "model", mr.ID,
				"map_ms", ms(s.Map), "page_in_ms", ms(s.PageIn), "interpreter_ms", ms(s.Interpreter),
				"allocate_ms", ms(s.Allocate), "first_invoke_ms", ms(s.FirstInvoke), "steady_invoke_ms", ms(s.Steady),
				"cold_ms", ms(s.Cold()), "heap_bytes", rep.Footprint.Heap, "mapped_bytes", rep.Footprint.Mapped)
		}
	}
	a.report.Timings.Prewarm = time.Since(t2)
	a.report.Timings.Total = time.Since(a.opts.Started)
	a.report.Pool = a.pool.Stats()
	return nil
}

// Pool is the interpreter pool (after Start).
func (a *Agent) Pool() *tflite.Pool { return a.pool }

// Store is the state (after Start).
func (a *Agent) Store() *storage.Store { return a.store }

// Report is what Start found and did.
func (a *Agent) Report() StartupReport { return a.report }

// Close frees the pool, then closes the state.
func (a *Agent) Close() error {
	var errs []error
	if a.pool != nil {
		errs = append(errs, a.pool.Close())
	}
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	return errors.Join(errs...)
}

// event queues a telemetry event in the outbox; the state is best effort
// here, a failure is logged and the agent goes on.
func (a *Agent) event(kind string, fields map[string]any) {
	a.log.Info("event", "kind", kind)
	if a.store == nil {
		return
	}
	payload, err := eventPayload(kind, fields)
	if err == nil {
		_, _, err = a.store.Append("telemetry/events", payload)
	}
	if err != nil {
		a.log.Error("event not queued", "kind", kind, "err", err)
	}
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
	<-ctx.Done()
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
