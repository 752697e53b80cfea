package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/edge-agent/edge-agent/tflite/modelgen"
)

func (c cli) run(ctx context.Context, args []string) error {
	fs := c.newFlags("run")
	cfgPath := fs.String("config", "", "configuration file (TOML); without it, the embedded defaults")
	reportPath := fs.String("report", "", "write the startup report (JSON) to this file once ready")
	stateDir := fs.String("state-dir", "", "override state_dir")
	modelsDir := fs.String("models-dir", "", "override models_dir")
	logLevel := fs.String("log-level", "", "override log_level (debug, info, warn, error)")
	budget := unsetBudget
	fs.Var(&budget, "budget", `override pool.budget, e.g. 256MiB or "auto"`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("run: unexpected argument %q", fs.Arg(0))
	}
	// Precedence: defaults < file < environment < flags.
	load := func() (Config, error) {
		cfg, err := LoadConfig(*cfgPath)
		if err != nil {
			return cfg, err
		}
		if *stateDir != "" {
			cfg.StateDir = *stateDir
		}
		if *modelsDir != "" {
			cfg.ModelsDir = *modelsDir
		}
		if *logLevel != "" {
			cfg.LogLevel = *logLevel
		}
		if budget != unsetBudget {
			cfg.Pool.Budget = budget
		}
		if err := cfg.Validate(); err != nil {
			return cfg, &configError{path: "(flags)", msg: err.Error()}
		}
		return cfg, nil
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	var level slog.LevelVar
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: &level}))
	ro := RunOptions{ReportPath: *reportPath, LogLevel: &level}
	if *cfgPath != "" {
		ro.Reload = load
	}
	return Run(ctx, cfg, log, Options{Started: c.started}, ro)
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
	if cfg.ModelsDir != "" {
		log.Warn("models_dir has no .tflite models; serving the generated demo model until one is added there",
			"models_dir", cfg.ModelsDir, "demo", cfg.demoModelPath())
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
