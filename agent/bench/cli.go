package bench

// The bench's subcommands beside the full run: replay, trace and zoo.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/agent"
)

// subcommands are run by Main when args[0] names one.
var subcommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"replay": replayCmd,
	"trace":  traceCmd,
	"zoo":    zooCmd,
	"naive":  naiveCmd,
}

// usageError is a bad command line: exit status 2.
type usageError struct{ error }

// Unwrap lets errors.Is see flag.ErrHelp (-h answers 0, not 2).
func (e usageError) Unwrap() error { return e.error }

func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("edge-agent-bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// replayCmd is `replay --trace FILE --models DIR --budget B --policy P
// [--against P2] [--json] [--simulate] [--read-rate R] [--huge-pages=false]`.
func replayCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("replay", stderr)
	trace := fs.String("trace", "", "the trace: CSV t_ms,model_id (required)")
	models := fs.String("models", "", "the models folder; ids are file names without .tflite (required)")
	budget := fs.String("budget", "50%", `pool budget: a size ("256MiB") or a share of the models' footprint ("50%")`)
	policy := fs.String("policy", "", "eviction policy: histogram (default), gdsf, cost, lru, ttl")
	asJSON := fs.Bool("json", false, "print one JSON object")
	simulate := fs.Bool("simulate", false, "replay with the measured per-model costs instead of loading and invoking")
	readRate := fs.String("read-rate", "", `with --simulate: storage read rate for a model not in the page cache, e.g. "25MB" (per second)`)
	against := fs.String("against", "", "also replay this policy, in step with the other request by request (see ReplayPair), and print both and their ratios")
	huge := fs.Bool("huge-pages", true, "first have the page cache hold each model in 2 MiB folios, as the agent does (false: leave it as it is)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *trace == "" || *models == "" {
		return usageError{errors.New("--trace and --models are required")}
	}
	f, err := os.Open(*trace)
	if err != nil {
		return err
	}
	t, err := ReadTrace(f)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", *trace, err)
	}
	costs, err := zooCosts(ctx, *models, 3, *huge)
	if err != nil {
		return err
	}
	b, err := parseBudget(*budget, costs)
	if err != nil {
		return usageError{err}
	}
	var rate float64
	if *readRate != "" {
		r, err := agent.ParseByteSize(strings.TrimSuffix(*readRate, "/s"))
		if err != nil || r <= 0 {
			return usageError{fmt.Errorf("--read-rate %q: want a size per second, e.g. 25MB", *readRate)}
		}
		rate = float64(r)
	}
	o := ReplayOptions{Trace: t, Models: *models, Budget: b, Policy: *policy, Simulate: *simulate, ReadRate: rate, Costs: costs, KeepPageCache: !*huge}
	if *against != "" {
		return replayPairCmd(ctx, o, *against, *asJSON, stdout)
	}
	res, err := Replay(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	printReplay(stdout, res)
	return nil
}

func replayPairCmd(ctx context.Context, o ReplayOptions, against string, asJSON bool, stdout io.Writer) error {
	p, err := ReplayPair(ctx, o, against)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(p)
	}
	printReplay(stdout, p.Baseline)
	printReplay(stdout, p.Policy)
	fmt.Fprintf(stdout, "%s ÷ %s, in step: cold time %.2f×, total load work %.2f×, p99 %.2f×\n",
		p.Baseline.Policy, p.Policy.Policy, p.ColdRatio, p.TotalLoadRatio, p.P99Ratio)
	return nil
}

func printReplay(stdout io.Writer, res ReplayResult) {
	fmt.Fprintf(stdout, "policy %s, budget %.1f MiB%s: %d requests, %d hits, %d cold starts paying %.1f ms; %d background loads (%.1f ms, %d wasted, %.2f CPU-s, %.1f J); total load work %.1f ms; %d evictions, %.3g byte·s; latency p50 %.2f p95 %.2f p99 %.2f ms; the best fixed warm set would pay %.1f ms\n",
		res.Policy, float64(res.Budget)/(1<<20), map[bool]string{true: " (simulated)"}[res.Simulated], res.Requests, res.Hits, res.ColdStarts, res.ColdMs,
		res.BackgroundLoads, res.BackgroundMs, res.BackgroundWasted, res.BackgroundCPUSeconds, res.BackgroundJoules, res.TotalLoadMs,
		res.Evictions, res.ByteSeconds, res.P50Ms, res.P95Ms, res.P99Ms, res.BestFixedSetMs)
}

// parseBudget reads a size or a percentage of the zoo's footprint.
func parseBudget(s string, costs map[string]Cost) (int64, error) {
	if p, ok := strings.CutSuffix(strings.TrimSpace(s), "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v <= 0 || v > 100 {
			return 0, fmt.Errorf("--budget %q: want a share in (0, 100]%%", s)
		}
		return int64(v / 100 * float64(footprint(costs))), nil
	}
	b, err := agent.ParseByteSize(s)
	if err != nil || b <= 0 {
		return 0, fmt.Errorf("--budget %q: want a positive size or a share", s)
	}
	return int64(b), nil
}

func footprint(costs map[string]Cost) int64 {
	var sum int64
	for _, c := range costs {
		sum += c.Footprint()
	}
	return sum
}

// traceCmd is `trace --shape S --models DIR [--seed N] [--zipf S]
// [--duration D] [--mean D] [--out FILE]`, or `trace azure …` and
// `trace import …` (azure.go's format).
func traceCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "azure":
			return traceAzureCmd(ctx, args[1:], stdout, stderr)
		case "import":
			return traceImportCmd(ctx, args[1:], stdout, stderr)
		}
	}
	fs := flags("trace", stderr)
	shape := fs.String("shape", "heavy", "trace shape: "+strings.Join(TraceShapes, ", "))
	models := fs.String("models", "", "the models folder whose ids the trace uses (required)")
	seed := fs.Int64("seed", 1, "random seed (the same seed gives the same trace)")
	zipf := fs.Float64("zipf", 1.1, "popularity exponent (Zipf s > 0)")
	dur := fs.Duration("duration", 0, "trace length (0: the shape's default)")
	mean := fs.Duration("mean", 0, "mean time between requests (0: the shape's default)")
	out := fs.String("out", "-", "file to write, - for stdout")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *models == "" {
		return usageError{errors.New("--models is required")}
	}
	ids, _, err := zooModels(*models)
	if err != nil {
		return err
	}
	if *zipf <= 0 {
		return usageError{fmt.Errorf("--zipf %v: want > 0", *zipf)}
	}
	t, err := GenerateTrace(TraceOptions{Shape: *shape, Models: ids, Seed: *seed, Duration: *dur, Mean: *mean, Zipf: *zipf})
	if err != nil {
		return usageError{err}
	}
	return writeTo(*out, stdout, func(w io.Writer) error { return WriteTrace(w, t) })
}

// writeTo writes to the file out, or to stdout for "-".
func writeTo(out string, stdout io.Writer, write func(io.Writer) error) error {
	if out == "-" {
		return write(stdout)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// traceAzureCmd is `trace azure [--functions N] [--minutes M] [--seed N]
// [--zipf S] [--per-minute R] [--out FILE]`: a per-minute invocation file
// in the Azure Functions 2019 format.
func traceAzureCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("trace azure", stderr)
	n := fs.Int("functions", 40, "functions (rows)")
	minutes := fs.Int("minutes", 1440, "minutes (columns)")
	seed := fs.Int64("seed", 1, "random seed (the same seed gives the same file)")
	zipf := fs.Float64("zipf", 1.1, "popularity exponent over the functions (Zipf s > 0)")
	rate := fs.Float64("per-minute", 30, "mean invocations per minute, all functions together")
	out := fs.String("out", "-", "file to write, - for stdout")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n <= 0 || *minutes <= 0 || *zipf <= 0 || *rate <= 0 {
		return usageError{errors.New("--functions, --minutes, --zipf and --per-minute must be > 0")}
	}
	fns := GenerateAzure(AzureOptions{Functions: *n, Minutes: *minutes, Seed: *seed, Zipf: *zipf, PerMinute: *rate})
	return writeTo(*out, stdout, func(w io.Writer) error { return WriteAzure(w, fns) })
}

// traceImportCmd is `trace import --azure FILE --models DIR [--functions N]
// [--seed N] [--out FILE]`: the N most invoked functions of a per-minute
// file as a request trace over the folder's models.
func traceImportCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("trace import", stderr)
	in := fs.String("azure", "", "an Azure Functions 2019 per-minute invocation file (required)")
	models := fs.String("models", "", "the models folder the functions map onto (required)")
	n := fs.Int("functions", 0, "functions to take, the most invoked first (0: one per model)")
	seed := fs.Int64("seed", 1, "random seed: which model each function becomes, where in its minute each request falls")
	out := fs.String("out", "-", "file to write, - for stdout")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *in == "" || *models == "" {
		return usageError{errors.New("--azure and --models are required")}
	}
	if *n < 0 {
		return usageError{fmt.Errorf("--functions %d: want ≥ 0", *n)}
	}
	ids, _, err := zooModels(*models)
	if err != nil {
		return err
	}
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	fns, err := ReadAzure(f)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", *in, err)
	}
	t, err := ImportAzure(fns, ImportOptions{Models: ids, Functions: *n, Seed: *seed})
	if err != nil {
		return fmt.Errorf("%s: %w", *in, err)
	}
	return writeTo(*out, stdout, func(w io.Writer) error { return WriteTrace(w, t) })
}

// zooCmd is `zoo --out DIR [--models SHARED] [--quick] [--seed N]`.
func zooCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("zoo", stderr)
	out := fs.String("out", "", "folder to fill (required)")
	shared := fs.String("models", "../shared/models", "the shared models folder")
	quick := fs.Bool("quick", false, "small generated models only (1–16 MiB)")
	seed := fs.Int64("seed", 0, "generated models' sizes (±25 %) and weights (0: the fixed sizes)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError{errors.New("--out is required")}
	}
	t := time.Now()
	if err := BuildZoo(*out, *shared, *quick, *seed); err != nil {
		return err
	}
	costs, err := zooCosts(ctx, *out, 3, true)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "zoo %s: %d models, %.1f MiB warm in all, costs measured (took %s)\n", *out, len(costs), float64(footprint(costs))/(1<<20), time.Since(t).Round(time.Millisecond))
	return nil
}
