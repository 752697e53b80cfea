package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
)

// Main is `edge-agent-bench [--out DIR] [--models DIR] [--reps N]
// [--quick] [--seed N]`, or one of its subcommands: `replay`, `trace`, `zoo`.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if cmd, ok := subcommands[args[0]]; ok {
			err := cmd(ctx, args[1:], stdout, stderr)
			var ue usageError
			switch {
			case errors.As(err, &ue) && errors.Is(err, flag.ErrHelp):
				return 0
			case errors.As(err, &ue):
				fmt.Fprintf(stderr, "edge-agent-bench %s: %v\n", args[0], err)
				return 2
			case err != nil:
				fmt.Fprintf(stderr, "edge-agent-bench %s: %v\n", args[0], err)
				return 1
			}
			return 0
		}
	}
	fs := flag.NewFlagSet("edge-agent-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bench-report", "folder for report.md and the SVG charts")
	models := fs.String("models", filepath.Join("..", "shared", "models"), "the shared models folder")
	reps := fs.Int("reps", 5, "interleaved repetitions of each startup comparison")
	quick := fs.Bool("quick", false, "a short run (fewer repetitions, smaller models)")
	seed := fs.Int64("seed", 0, "the policies section's zoo and traces (0: from the clock; the report names it)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	r, err := Run(ctx, Options{Out: *out, Models: *models, Reps: *reps, Quick: *quick, Seed: *seed, Log: log})
	if err != nil {
		fmt.Fprintf(stderr, "edge-agent-bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\nreport: %s (took %s)\n", Summary(r), filepath.Join(*out, "report.md"), r.Duration.Round(1e9))
	return 0
}
