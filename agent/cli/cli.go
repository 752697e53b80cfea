// Package cli is the edge-agent command line: run, infer, models, config,
// call, homeassistant and version, with their flags, JSON output and exit
// statuses. The agent itself is package agent; cmd/edge-agent only wires
// signals to Main.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/modelgen"
)

const usage = `edge-agent — warm-start agent for TensorFlow Lite models

Usage:
  edge-agent run [--config FILE]
  edge-agent version [--json]
  edge-agent infer --model FILE --input FILE [--labels FILE] [--top K] [--threads N] [--json]
  edge-agent models inspect FILE [--json]
  edge-agent models gen --out FILE [--size N]
  edge-agent config check FILE
  edge-agent call [flags] VERB [flags] [--model ID] [--image FILE | --input FILE] [--top K] [--budget SIZE]
                       [--config FILE] [--broker URL] [--device ID] [--timeout D] [--json]
                       (VERB: status, prewarm, evict, pin, unpin, infer, rescan, rollback, set-budget, wake)
  edge-agent homeassistant remove [--config FILE] [--broker URL] [--device ID] [--if-enabled]

Flags go before or after a verb; "edge-agent COMMAND -h" lists a command's
flags, and help never runs a command.

Exit status: 0 ok, 1 failure, 2 usage, 3 bad model file, 4 model cannot run
here, 5 bad input, 6 bad config. Errors print "edge-agent: MESSAGE [code]";
with --json they are also printed as {"schema":1,"error":{"code","message"}}.
`

// cli carries the output streams of one command invocation.
type cli struct {
	stdout, stderr io.Writer
	started        time.Time
}

// Main runs the command line args (without the program name) and returns
// the exit status. ctx is cancelled by SIGINT/SIGTERM in main.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := cli{stdout: stdout, stderr: stderr, started: time.Now()}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	var err error
	asJSON := false
	if cmd, rest := args[0], args[1:]; len(rest) > 0 && isHelp(rest[0]) && (cmd == "models" || cmd == "config" || cmd == "call" || cmd == "homeassistant") {
		fmt.Fprint(stdout, usage)
		return ExitOK
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		err = c.run(ctx, rest)
	case "version":
		asJSON, err = c.version(rest)
	case "infer":
		asJSON, err = c.infer(rest)
	case "models":
		asJSON, err = c.models(rest)
	case "config":
		err = c.config(rest)
	case "call":
		asJSON, err = c.call(ctx, rest)
	case "homeassistant":
		err = c.homeassistant(ctx, rest)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	default:
		err = usageErr("unknown command %q", cmd)
	}
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	code := tflite.Code(err)
	fmt.Fprintf(stderr, "edge-agent: %v [%s]\n", err, code)
	if errors.Is(err, ErrUsage) {
		fmt.Fprint(stderr, "run 'edge-agent help' for usage\n")
	}
	if asJSON {
		_ = c.printJSON(map[string]any{"schema": agent.SchemaVersion, "error": map[string]string{"code": code, "message": err.Error()}})
	}
	return exitCode(err)
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return ErrUsage }

func usageErr(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

// newFlags makes a flag set whose parse errors are usage errors.
func (c cli) newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	return fs
}

// parse parses flags before, between and after the positional arguments
// (`call --broker URL status` and `call status --broker URL` alike; "--"
// ends the flags), leaving the positional ones in fs.Args(). A first
// positional "help" prints the flags and is flag.ErrHelp: help never
// runs the command.
func parse(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageErr("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...) // after "--", nothing is a flag
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	if len(pos) > 0 && pos[0] == "help" {
		fs.Usage()
		return flag.ErrHelp
	}
	// Leave the positional arguments in fs.Args(); the flags keep their values.
	return fs.Parse(append([]string{"--"}, pos...))
}

// isHelp says whether a command's first argument asks for help.
func isHelp(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "--help" || arg == "-help"
}

func (c cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c cli) version(args []string) (bool, error) {
	fs := c.newFlags("version")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return *asJSON, err
	}
	v := versionInfo()
	if *asJSON {
		return true, c.printJSON(struct {
			Schema int `json:"schema"`
			VersionInfo
		}{agent.SchemaVersion, v})
	}
	fmt.Fprintf(c.stdout, "edge-agent %s\ngo %s %s/%s\ntflite %s\n", v.Agent, v.Go, v.OS, v.Arch, v.TFLite)
	return false, nil
}

func (c cli) models(args []string) (bool, error) {
	if len(args) == 0 {
		return false, usageErr("models: want 'inspect FILE' or 'gen --out FILE'")
	}
	switch args[0] {
	case "inspect":
		return c.inspect(args[1:])
	case "gen":
		return false, c.gen(args[1:])
	}
	return false, usageErr("models: unknown subcommand %q", args[0])
}

func (c cli) inspect(args []string) (bool, error) {
	fs := c.newFlags("models inspect")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return *asJSON, err
	}
	if fs.NArg() != 1 {
		return *asJSON, usageErr("models inspect: want exactly one FILE")
	}
	info, err := tflite.Inspect(fs.Arg(0), nil)
	if err != nil {
		return *asJSON, err
	}
	if *asJSON {
		return true, c.printJSON(struct {
			Schema int `json:"schema"`
			tflite.ModelInfo
		}{agent.SchemaVersion, info})
	}
	fmt.Fprintf(c.stdout, "path    %s\nsize    %d\nsha256  %s\n", info.Path, info.Size, info.SHA256)
	printTensors := func(kind string, ts []tflite.TensorInfo) {
		for i, t := range ts {
			q := ""
			if t.Quant != nil {
				q = fmt.Sprintf(" scale=%g zero_point=%d", t.Quant.Scale, t.Quant.ZeroPoint)
			}
			fmt.Fprintf(c.stdout, "%s[%d] %s %s %v (%d bytes)%s\n", kind, i, t.Name, t.Type, t.Shape, t.Bytes, q)
		}
	}
	printTensors("input", info.Inputs)
	printTensors("output", info.Outputs)
	if len(info.CustomOps) > 0 {
		fmt.Fprintf(c.stdout, "custom ops: %s\n", strings.Join(info.CustomOps, ", "))
	}
	return false, nil
}

func (c cli) gen(args []string) error {
	fs := c.newFlags("models gen")
	out := fs.String("out", "", "file to write (required)")
	size := agent.ByteSize(agent.DemoModelSize)
	fs.Var(&size, "size", "approximate file size, e.g. 4MiB, 256MiB")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 0 {
		return usageErr("models gen: want --out FILE")
	}
	spec, err := modelgen.ForSize(int64(size))
	if err != nil {
		return usageErr("models gen: %v", err)
	}
	if err := modelgen.WriteFile(*out, spec); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "wrote %s: %d x FULLY_CONNECTED %dx%d float32\n", *out, spec.Layers, spec.Width, spec.Width)
	return nil
}

// InferResult is the stable JSON of `edge-agent infer --json`.
type InferResult struct {
	Schema    int              `json:"schema"`
	Model     tflite.ModelInfo `json:"model"`
	Input     InferInput       `json:"input"`
	Top       []infer.Class    `json:"top"`
	Outputs   []infer.Output   `json:"outputs,omitempty"` // not a classifier: every output tensor
	Stages    tflite.Stages    `json:"stages"`
	Footprint tflite.Footprint `json:"footprint"`
	Threads   int              `json:"threads"`
	Runtime   string           `json:"runtime"`
}

// InferInput says what the input was taken as.
type InferInput struct {
	Path string `json:"path"`
	Kind string `json:"kind"` // "image" or "raw"
}

func (c cli) infer(args []string) (bool, error) {
	fs := c.newFlags("infer")
	model := fs.String("model", "", "model file (required)")
	input := fs.String("input", "", "input: .bmp/.png/.jpg image or a raw tensor file (required)")
	labels := fs.String("labels", "", "labels file, one per line")
	top := fs.Int("top", 5, "how many classes to print")
	threads := fs.Int("threads", 0, "interpreter threads (0: runtime default)")
	mean := fs.Float64("mean", float64(infer.DefaultNormalization.Mean), "float inputs: (pixel-mean)/std")
	std := fs.Float64("std", float64(infer.DefaultNormalization.Std), "float inputs: (pixel-mean)/std")
	maxPixels := fs.Int("max-pixels", infer.DefaultMaxPixels, "refuse images with more pixels than this")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return *asJSON, err
	}
	switch {
	case *maxPixels < 1:
		return *asJSON, usageErr("infer: --max-pixels must be at least 1")
	case *model == "" || *input == "":
		return *asJSON, usageErr("infer: --model and --input are required")
	case fs.NArg() != 0:
		return *asJSON, usageErr("infer: unexpected argument %q", fs.Arg(0))
	case *top < 1:
		return *asJSON, usageErr("infer: --top must be at least 1")
	case *threads < 0:
		return *asJSON, usageErr("infer: --threads must not be negative")
	case *std == 0:
		return *asJSON, usageErr("infer: --std must not be 0")
	}
	var lab []string
	if *labels != "" {
		var err error
		if lab, err = infer.ReadLabels(*labels); err != nil {
			return *asJSON, err
		}
	}
	req, err := infer.ReadRequest(*input, *maxPixels)
	if err != nil {
		return *asJSON, err
	}
	req.Norm = infer.Normalization{Mean: float32(*mean), Std: float32(*std)}
	req.Top, req.Labels = *top, lab
	// The warm-up runs on the request's own input, so the staged timings
	// are this input's; the pipeline then answers it once more.
	m, it, rep, err := tflite.LoadStaged(*model, tflite.LoadOptions{
		Interpreter: tflite.Options{Threads: *threads},
		PageIn:      true,
		Warm:        tflite.WarmOptions{InputFunc: req.Prepare},
	})
	if err != nil {
		return *asJSON, err
	}
	defer func() { _ = m.Close() }()
	defer it.Close()
	out, err := infer.Run(infer.Interpreter{It: it}, req)
	if err != nil {
		return *asJSON, err
	}
	digest, _, err := tflite.Digest(*model, nil)
	if err != nil {
		return *asJSON, err
	}
	res := InferResult{
		Schema:    agent.SchemaVersion,
		Model:     tflite.ModelInfo{Path: *model, Size: m.Size, SHA256: digest, Inputs: it.Inputs(), Outputs: it.Outputs(), CustomOps: []string{}},
		Input:     InferInput{Path: *input, Kind: req.Kind()},
		Top:       out.Top,
		Outputs:   out.Outputs,
		Stages:    rep.Stages,
		Footprint: rep.Footprint,
		Threads:   *threads,
		Runtime:   tflite.RuntimeVersion(),
	}
	if *asJSON {
		return true, c.printJSON(res)
	}
	for i, cl := range res.Top {
		fmt.Fprintf(c.stdout, "%d. %4d  %.4f  %s\n", i+1, cl.Index, cl.Score, cl.Label)
	}
	for _, o := range res.Outputs {
		fmt.Fprintf(c.stdout, "output %s %s %v: %d bytes (--json for the data)\n", o.Name, o.Type, o.Shape, len(o.Data))
	}
	s := rep.Stages
	fmt.Fprintf(c.stdout, "stages (ms): map %.3f, page-in %.3f, interpreter %.3f, allocate %.3f, first invoke %.3f, steady invoke %.3f; cold total %.3f\n",
		ms(s.Map), ms(s.PageIn), ms(s.Interpreter), ms(s.Allocate), ms(s.FirstInvoke), ms(s.Steady), ms(s.Cold()))
	fmt.Fprintf(c.stdout, "footprint: %d bytes mapped, %d bytes heap\n", rep.Footprint.Mapped, rep.Footprint.Heap)
	return false, nil
}

func (c cli) config(args []string) error {
	if len(args) != 2 || args[0] != "check" {
		return usageErr("config: want 'check FILE'")
	}
	if _, err := agent.LoadConfig(args[1]); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s: ok\n", args[1])
	return nil
}
