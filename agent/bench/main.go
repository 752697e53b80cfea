package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
)

// Main is `edge-agent-bench [--out DIR] [--models DIR] [--reps N] [--quick]`.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edge-agent-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bench-report", "folder for report.md and the SVG charts")
	models := fs.String("models", filepath.Join("..", "shared", "models"), "the shared models folder")
	reps := fs.Int("reps", 5, "interleaved repetitions of each startup comparison")
	quick := fs.Bool("quick", false, "a short run (fewer repetitions, smaller models)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	r, err := Run(ctx, Options{Out: *out, Models: *models, Reps: *reps, Quick: *quick, Log: log})
	if err != nil {
		fmt.Fprintf(stderr, "edge-agent-bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\nreport: %s (took %s)\n", Summary(r), filepath.Join(*out, "report.md"), r.Duration.Round(1e9))
	return 0
}
