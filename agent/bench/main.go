package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/edge-agent/edge-agent/agent"
)

const usage = `edge-agent-bench — the agent beside the naive baseline, written as a report

Usage:
  edge-agent-bench [--out DIR] [--models DIR] [--reps N] [--quick] [--only S,...]   the full run (many minutes)
  edge-agent-bench replay --trace FILE --models DIR [--budget B] [--policy P] [--json] [--simulate]
  edge-agent-bench trace --models DIR [--shape S] [--seed N] [--out FILE]
  edge-agent-bench trace azure [--seed N] [--zipf S] [--out FILE]      an Azure Functions per-minute file
  edge-agent-bench trace import --azure FILE --models DIR [--seed N] [--out FILE]
  edge-agent-bench zoo --out DIR [--models SHARED] [--quick]
  edge-agent-bench naive MODEL=INPUT...                              the naive loop as a process (the process rows' baseline)
  edge-agent-bench help | -h | --help                                this text

Each subcommand takes -h for its flags.
`

func isHelp(s string) bool { return s == "help" || s == "-h" || s == "--help" || s == "-help" }

// Main is `edge-agent-bench [--out DIR] [--models DIR] [--reps N]
// [--quick] [--seed N] [--doc FILE]`, or one of its subcommands: `replay`, `trace`, `zoo`.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if len(args) > 1 && isHelp(args[1]) && subcommands[args[0]] != nil {
		args = []string{args[0], "-h"} // `replay help`: its flags, no work
	}
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
	reps := fs.Int("reps", 0, "interleaved repetitions of each startup comparison (0: 9, --quick 2)")
	quick := fs.Bool("quick", false, "a short run (fewer repetitions, smaller models)")
	doc := fs.String("doc", "", "also write the report as this docs page (make bench: docs/benchmarks.md)")
	only := fs.String("only", "", `run only these sections, comma-separated (e.g. "startup,first start"); writes report.json, not the report`)
	sdRate := fs.Float64("sd-rate", sdRateDefault, "the emulated SD card's read rate, bytes/s (startup and first start again on it; needs root; < 0: skip)")
	agentBin := fs.String("agent-bin", "", "the edge-agent binary for the process rows (default: edge-agent beside this program)")
	seed := fs.Int64("seed", 0, "the policies section's zoo and traces (0: from the clock; the report names it)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		// Anything else is a mistake: a whole run takes many minutes.
		fmt.Fprintf(stderr, "edge-agent-bench: unknown subcommand or argument %q\n%s", fs.Arg(0), usage)
		return 2
	}
	var sections []string
	if *only != "" {
		sections = strings.Split(*only, ",")
		if err := checkOnly(sections); err != nil {
			fmt.Fprintf(stderr, "edge-agent-bench: --only: %v\n", err)
			return 2
		}
		if *doc != "" {
			fmt.Fprintf(stderr, "edge-agent-bench: --only writes report.json, not a docs page: drop --doc\n")
			return 2
		}
	}
	if err := checkInputs(*models, *quick); err != nil {
		fmt.Fprintf(stderr, "edge-agent-bench: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	r, err := Run(ctx, Options{Out: *out, Models: *models, Reps: *reps, Quick: *quick, Seed: *seed, Only: sections, SDRate: *sdRate, AgentBin: *agentBin, Log: log})
	if err != nil {
		fmt.Fprintf(stderr, "edge-agent-bench: %v\n", err)
		return 1
	}
	if len(sections) > 0 {
		fmt.Fprintf(stdout, "partial run (%s): %s (took %s)\n", *only, filepath.Join(*out, "report.json"), r.Duration.Round(1e9))
		return 0
	}
	fmt.Fprintf(stdout, "%s\nreport: %s (took %s)\n", Summary(r), filepath.Join(*out, "report.md"), r.Duration.Round(1e9))
	if *doc != "" {
		if err := WriteDoc(*doc, *out, agent.Version); err != nil {
			fmt.Fprintf(stderr, "edge-agent-bench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "docs page: %s\n", *doc)
	}
	return 0
}
