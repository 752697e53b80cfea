package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/edge-agent/edge-agent/tflite/modelgen"
)

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
		if err := modelgen.WriteFile(path, spec); err != nil {
			return nil, fmt.Errorf("demo model: %w", err)
		}
		log.Info("demo model generated", "path", path, "layers", spec.Layers, "width", spec.Width)
	}
	return []ModelConfig{{ID: "demo", Path: path, Pinned: true}}, nil
}
