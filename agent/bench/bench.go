// Package bench is `edge-agent-bench` (agent/cmd/edge-agent-bench): it measures, in one process run and
// side by side, what the agent saves over a hand-rolled loop around
// go-tflite (naive.go), and writes a markdown report with SVG charts.
// Every comparison is interleaved in the same run (this machine is noisy)
// and reported as the median with its spread.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Options configure a run.
type Options struct {
	// Out is the report folder (report.md and the charts). Required.
	Out string
	// Models is the shared models folder; default ../shared/models.
	Models string
	// Reps is how many interleaved repetitions each startup comparison
	// gets. Default 9: a first answer of a few milliseconds swings with
	// the scheduler (naive's xor: 1.9–10 ms within one run), and the
	// median of 5 moved a ratio by ±30% between runs of the same code.
	Reps int
	// Quick shrinks every section (for tests): fewer reps, smaller models.
	Quick bool
	// Seed makes the policies section's zoo (generated models' sizes and
	// weights) and traces; 0 picks one from the clock, so every run is a
	// problem the policies were not tuned on. The report names it: pass it
	// again to repeat a run.
	Seed int64
	// Only, when set, runs just these sections (their step names: startup,
	// first start, serving, memory, policies, scaling, energy) and writes
	// report.json instead of the markdown report, which needs them all:
	// for working on one section without a many-minute run.
	Only []string
	// SDRate is the emulated SD card's read rate, bytes/s, for the startup
	// and first-start rows on a card (sdcard.go); 0 means 25 MB/s, < 0 off.
	SDRate float64
	// AgentBin is the edge-agent binary the process rows spawn; "" means
	// edge-agent beside this executable (make bench builds both).
	AgentBin string
	// Log receives progress; nil discards.
	Log *slog.Logger
}

// Report is everything measured.
type Report struct {
	When       time.Time
	Machine    string
	Runtime    string
	Startup    Startup
	FirstStart FirstStart
	// StartupSD and FirstStartSD are the same sections with the models on
	// an emulated SD card (SD says how, or why they were not measured).
	StartupSD    Startup
	FirstStartSD FirstStart
	SD           SDInfo
	// Process is startup and first start as separate processes over MQTT.
	Process  ProcessRows
	Serving  Serving
	Memory   Memory
	Policies Policies
	Scaling  Scaling
	Energy   Energy
	Duration time.Duration
}

// Run measures everything and writes the report into o.Out.
func Run(ctx context.Context, o Options) (Report, error) {
	if o.Out == "" {
		return Report{}, fmt.Errorf("bench: an output folder is required")
	}
	if o.Models == "" {
		o.Models = filepath.Join("..", "shared", "models")
	}
	if err := checkInputs(o.Models, o.Quick); err != nil {
		return Report{}, err
	}
	if o.Reps <= 0 {
		o.Reps = 9
		if o.Quick {
			o.Reps = 2
		}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.SDRate == 0 {
		o.SDRate = sdRateDefault
	}
	if o.Seed == 0 {
		o.Seed = 1 + time.Now().UnixNano()%1_000_000
	}
	o.Log.Info("bench: seed", "seed", o.Seed)
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return Report{}, err
	}
	work, err := os.MkdirTemp("", "edge-agent-bench-")
	if err != nil {
		return Report{}, err
	}
	defer func() { _ = os.RemoveAll(work) }()

	start := time.Now()
	r := Report{When: start.UTC(), Machine: machine(), Runtime: runtimeVersion()}
	steps := []struct {
		name string
		run  func() error
	}{
		{"startup", func() (err error) { r.Startup, err = startup(ctx, o, work); return }},
		{"first start", func() (err error) { r.FirstStart, err = firstStart(ctx, o, work); return }},
		{"sd card", func() error { r.StartupSD, r.FirstStartSD, r.SD = onSDCard(ctx, o, work); return nil }},
		{"processes", func() error { r.Process = processRows(ctx, o, work); return nil }},
		{"serving", func() (err error) { r.Serving, err = serving(ctx, o, work); return }},
		{"memory", func() (err error) { r.Memory, err = memory(ctx, o, work); return }},
		{"policies", func() (err error) { r.Policies, err = policies(ctx, o, work); return }},
		{"scaling", func() (err error) { r.Scaling, err = scaling(o, work); return }},
		{"energy", func() (err error) { r.Energy, err = energy(ctx, o, work); return }},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if len(o.Only) > 0 && !slices.Contains(o.Only, s.name) {
			continue
		}
		t := time.Now()
		o.Log.Info("bench: "+s.name, "phase", "start")
		if err := s.run(); err != nil {
			return r, fmt.Errorf("bench %s: %w", s.name, err)
		}
		o.Log.Info("bench: "+s.name, "phase", "done", "took", time.Since(t).Round(time.Millisecond))
	}
	r.Duration = time.Since(start)
	if len(o.Only) > 0 {
		return r, writeJSON(filepath.Join(o.Out, "report.json"), r)
	}
	return r, write(o.Out, r)
}

// writeJSON writes a partial run's report (Options.Only).
func writeJSON(path string, r Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// checkOnly refuses a section name Run does not know.
func checkOnly(only []string) error {
	for _, n := range only {
		if !slices.Contains(Sections, n) {
			return fmt.Errorf("unknown section %q (sections: %s)", n, strings.Join(Sections, ", "))
		}
	}
	return nil
}

// Sections are Run's steps, in order (Options.Only names them).
var Sections = []string{"startup", "first start", "sd card", "processes", "serving", "memory", "policies", "scaling", "energy"}
