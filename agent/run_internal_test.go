package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/edge-agent/edge-agent/tflite"
)

// An empty models_dir is said, not silently replaced by the demo model.
func TestEmptyModelsDirIsSaid(t *testing.T) {
	var buf bytes.Buffer
	cfg := DefaultConfig()
	cfg.StateDir, cfg.ModelsDir = t.TempDir(), t.TempDir()
	models, err := resolveModels(cfg, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil || len(models) != 1 || models[0].ID != "demo" {
		t.Fatalf("models %v, %v", models, err)
	}
	if !strings.Contains(buf.String(), "models_dir has no .tflite models") || !strings.Contains(buf.String(), cfg.ModelsDir) {
		t.Fatalf("log does not say models_dir is empty:\n%s", buf.String())
	}
}

// Event fields log as attributes and groups, never as Go struct dumps.
func TestEventFieldsLogStructured(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("event", flatten(map[string]any{"model": "m", "footprint": tflite.Footprint{Mapped: 4203744, Heap: 1118800}})...)
	out := buf.String()
	for _, want := range []string{"footprint.mapped_bytes=4203744", "footprint.heap_bytes=1118800", "model=m"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "{") {
		t.Errorf("a struct dump in the log:\n%s", out)
	}
}
