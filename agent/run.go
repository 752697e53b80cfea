package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/modelgen"
)

func (c cli) run(ctx context.Context, args []string) error {
	fs := c.newFlags("run")
	cfgPath := fs.String("config", "", "configuration file (TOML); without it, the embedded defaults")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("run: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	return Run(ctx, cfg, newLogger(c.stderr, cfg.LogLevel))
}

func newLogger(w interface{ Write([]byte) (int, error) }, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated with the config
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// Run is the daemon: it warms the configured models, stays up until ctx
// is cancelled, then frees everything.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	start := time.Now()
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	models, err := resolveModels(cfg, log)
	if err != nil {
		return err
	}
	pool := tflite.NewPool(tflite.PoolOptions{
		Budget:      int64(cfg.Pool.Budget),
		PerModel:    cfg.Pool.InterpretersPerModel,
		Interpreter: tflite.Options{Threads: cfg.Pool.Threads},
		PageIn:      cfg.pageIn(),
		Logger:      log,
		OnEvict: func(e tflite.EvictEvent) {
			log.Info("model evicted", "model", e.ModelID, "bytes", e.Bytes, "reason", e.Reason)
		},
	})
	defer pool.Close()

	digests := &tflite.MemDigestCache{}
	for _, m := range models {
		// A bad model is reported and skipped; the others still serve.
		if err := pool.Register(tflite.ModelSpec{ID: m.ID, Path: m.Path, Pinned: m.Pinned}); err != nil {
			log.Error("model not registered", "model", m.ID, "path", m.Path, "code", tflite.Code(err), "err", err)
			continue
		}
		digest, _, err := tflite.Digest(m.Path, digests)
		if err != nil {
			log.Error("model not hashed", "model", m.ID, "err", err)
		}
		log.Info("model registered", "model", m.ID, "path", m.Path, "sha256", digest, "pinned", m.Pinned)
	}

	// Pinned models first: they are what the device must always answer with.
	sort.SliceStable(models, func(i, j int) bool { return models[i].Pinned && !models[j].Pinned })
	for _, m := range models {
		if ctx.Err() != nil {
			break
		}
		rep, loaded, err := pool.Prewarm(ctx, m.ID)
		switch {
		case errors.Is(err, context.Canceled):
		case err != nil:
			log.Error("model not warmed", "model", m.ID, "code", tflite.Code(err), "err", err)
		case loaded:
			s := rep.Stages
			log.Info("model warm", "model", m.ID,
				"map_ms", ms(s.Map), "page_in_ms", ms(s.PageIn), "interpreter_ms", ms(s.Interpreter),
				"allocate_ms", ms(s.Allocate), "first_invoke_ms", ms(s.FirstInvoke), "steady_invoke_ms", ms(s.Steady),
				"cold_ms", ms(s.Cold()), "heap_bytes", rep.Footprint.Heap, "mapped_bytes", rep.Footprint.Mapped)
		}
	}
	st := pool.Stats()
	log.Info("ready", "models", len(models), "warm", st.WarmModels, "bytes_in_use", st.BytesInUse,
		"budget", st.Budget, "startup_ms", ms(time.Since(start)))

	<-ctx.Done()
	log.Info("stopping", "reason", context.Cause(ctx))
	if err := pool.Close(); err != nil {
		return fmt.Errorf("close pool: %w", err)
	}
	log.Info("stopped", "loads", st.Loads, "evictions", pool.Stats().Evictions)
	return nil
}

// resolveModels lists the configured models: explicit ones, then the models
// directory, or else the demo model, generated on first use.
func resolveModels(cfg Config, log *slog.Logger) ([]ModelConfig, error) {
	models := append([]ModelConfig{}, cfg.Models...)
	if cfg.ModelsDir != "" {
		seen := map[string]bool{}
		for _, m := range models {
			seen[m.ID] = true
		}
		entries, err := os.ReadDir(cfg.ModelsDir)
		if err != nil {
			return nil, fmt.Errorf("models_dir: %w", err)
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || !strings.HasSuffix(name, ".tflite") {
				continue
			}
			id := strings.TrimSuffix(name, ".tflite")
			if !ValidModelID(id) || seen[id] {
				log.Warn("model file skipped", "file", name, "reason", "id invalid or already configured")
				continue
			}
			seen[id] = true
			models = append(models, ModelConfig{ID: id, Path: filepath.Join(cfg.ModelsDir, name)})
		}
	}
	if len(models) > 0 {
		return models, nil
	}
	path := cfg.demoModelPath()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		spec, err := modelgen.ForSize(DemoModelSize)
		if err != nil {
			return nil, err
		}
		if err := writeModel(path, spec); err != nil {
			return nil, fmt.Errorf("demo model: %w", err)
		}
		log.Info("demo model generated", "path", path, "layers", spec.Layers, "width", spec.Width)
	}
	return []ModelConfig{{ID: "demo", Path: path, Pinned: true}}, nil
}
