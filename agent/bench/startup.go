package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite"
	"golang.org/x/sys/unix"
)

// Config names a way of serving the first request.
const (
	Naive     = "naive"
	Cold      = "agent cold"
	Restored  = "agent restored"
	Prewarmed = "agent prewarmed"
)

// Configs in report order.
var Configs = []string{Naive, Cold, Restored, Prewarmed}

// Startup compares the four configurations on one model.
type Startup struct {
	Model string
	// ToFirst is start (process start for naive/cold/restored, the wake for
	// prewarmed) to the first result, ms.
	ToFirst map[string]Dist
	// FirstRequest is the first request's own latency, ms: request → result.
	FirstRequest map[string]Dist
	Steady       Dist // naive's steady request latency, ms
	AgentSteady  Dist // the agent's (auto-tuned threads), ms
	// Stages are the medians of each configuration's stages, in order,
	// for the waterfall.
	Stages map[string][]Stage
}

// Stage is one named slice of a start.
type Stage struct {
	Name string
	Ms   float64
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func idle() power.System { return power.System{Load1: 0.1, Cores: runtime.NumCPU(), MemAvailMiB: 1024} }

// fixtureRoot writes a minimal sysfs tree: no battery (mains) or a battery
// at the given percent, so the policy is the same on any machine.
func fixtureRoot(dir string, batteryPercent int) string {
	root := filepath.Join(dir, fmt.Sprintf("sysfs-%d", batteryPercent))
	if batteryPercent <= 0 {
		_ = os.MkdirAll(filepath.Join(root, "sys/class/power_supply"), 0o755)
		return root
	}
	bat := filepath.Join(root, "sys/class/power_supply/BAT0")
	_ = os.MkdirAll(bat, 0o755)
	for k, v := range map[string]string{"type": "Battery", "status": "Discharging", "capacity": fmt.Sprint(batteryPercent), "present": "1"} {
		_ = os.WriteFile(filepath.Join(bat, k), []byte(v+"\n"), 0o644)
	}
	return root
}

func agentConfig(stateDir, sysfs string, models ...agent.ModelConfig) agent.Config {
	cfg := agent.DefaultConfig()
	cfg.StateDir = stateDir
	cfg.Power.SysfsRoot = sysfs
	cfg.Models = models
	cfg.Prewarm.KeepAlive = 0
	cfg.MQTT.LocalListen = "" // the bench measures the agent, not a broker
	return cfg
}

func startAgent(ctx context.Context, cfg agent.Config) (*agent.Agent, error) {
	a := agent.New(cfg, quiet(), agent.Options{System: idle})
	if err := a.Start(ctx); err != nil {
		_ = a.Close()
		return nil, err
	}
	return a, nil
}

// request is one inference through the pool, as the agent serves it; it
// returns the latency.
func request(ctx context.Context, a *agent.Agent, model string, input []byte) (time.Duration, error) {
	_, d, err := infer1(ctx, a, model, input)
	return d, err
}

// infer1 is one inference through the pool: output 0 and the latency.
func infer1(ctx context.Context, a *agent.Agent, model string, input []byte) ([]byte, time.Duration, error) {
	t := time.Now()
	l, err := a.Pool().Acquire(ctx, model)
	if err != nil {
		return nil, 0, err
	}
	defer l.Release()
	res, err := infer.Run(l, infer.Request{Tensor: input, Raw: true})
	return res.Raw, time.Since(t), err
}

// asNewProcess puts the next timed start where a new process would be:
// the model files out of the page cache, and no garbage of the
// configuration measured before it in this process (the naive loop's
// file reads and outputs: 10–13 MB) left for a collection to fall on the
// next one's path.
func asNewProcess(paths ...string) {
	for _, p := range paths {
		dropCache(p)
	}
	runtime.GC()
}

// dropCache evicts the file's pages from the page cache, as a resume or
// boot leaves them: the next load reads from storage again. Best effort:
// pages still mapped somewhere stay.
func dropCache(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

func inputFor(path string) ([]byte, error) {
	info, err := tflite.Inspect(path, nil)
	if err != nil {
		return nil, err
	}
	in := make([]byte, info.Inputs[0].Bytes)
	for i := range in {
		in[i] = byte(i * 7)
	}
	if info.Inputs[0].Type == "float32" {
		for i := 0; i+4 <= len(in); i += 4 {
			binary.LittleEndian.PutUint32(in[i:], 0x3f000000) // 0.5
		}
	}
	return in, nil
}

func startup(ctx context.Context, o Options, work string) (Startup, error) {
	model := "mobilenet_v2_1.0_224_quant.tflite"
	path := filepath.Join(o.Models, model)
	input, err := inputFor(path)
	if err != nil {
		return Startup{}, err
	}
	mains, none := fixtureRoot(work, 0), fixtureRoot(work, 5)
	mc := agent.ModelConfig{ID: "m", Path: path}
	toFirst := map[string][]float64{}
	first := map[string][]float64{}
	stages := map[string][][]Stage{}
	var steady, agentSteady []float64

	for rep := range o.Reps {
		// (a) naive: load at the first request.
		// A hand-rolled loop with a sensible thread count: one per core.
		// Every configuration starts with the model out of the page cache.
		asNewProcess(path)
		n := newNaive(path, runtime.NumCPU())
		t := time.Now()
		if _, err := n.Infer(input, nil); err != nil {
			return Startup{}, err
		}
		d := msOf(time.Since(t))
		toFirst[Naive] = append(toFirst[Naive], d)
		first[Naive] = append(first[Naive], d)
		fs := n.FirstStages()
		stages[Naive] = append(stages[Naive], []Stage{{stLoad, msOf(fs.Read + fs.Model)},
			{stInterp, msOf(fs.Interpreter)}, {stAlloc, msOf(fs.Allocate)}, {stInvoke, msOf(fs.FirstInvoke)}})
		for range 3 {
			t = time.Now()
			_, _ = n.Infer(input, nil)
			steady = append(steady, msOf(time.Since(t)))
		}
		n.Close()

		// (b) agent cold: empty state, so it calibrates, then warms (on mains).
		state := filepath.Join(work, fmt.Sprintf("state-%d", rep))
		asNewProcess(path)
		t = time.Now()
		a, err := startAgent(ctx, agentConfig(state, mains, mc))
		if err != nil {
			return Startup{}, err
		}
		started := time.Since(t)
		req, err := request(ctx, a, "m", input)
		if err != nil {
			_ = a.Close()
			return Startup{}, err
		}
		toFirst[Cold] = append(toFirst[Cold], msOf(started+req))
		first[Cold] = append(first[Cold], msOf(req))
		// The calibration that follows in the background is what (c) and
		// (d) restore.
		<-a.Settled()
		rep0 := a.Report()
		stages[Cold] = append(stages[Cold], agentStages(rep0, req))
		_ = a.Close()

		// (c) agent restored: the state from (b), nothing prewarmed (battery
		// at 5%): the first request loads the model.
		asNewProcess(path)
		t = time.Now()
		a, err = startAgent(ctx, agentConfig(state, none, mc))
		if err != nil {
			return Startup{}, err
		}
		started = time.Since(t)
		req, err = request(ctx, a, "m", input)
		if err != nil {
			_ = a.Close()
			return Startup{}, err
		}
		toFirst[Restored] = append(toFirst[Restored], msOf(started+req))
		first[Restored] = append(first[Restored], msOf(req))
		ls := a.Pool().Models()[0].LastLoad.Stages
		st := agentStages(a.Report(), 0)
		st = append(st, Stage{stLoad, msOf(ls.Map + ls.PageIn)}, Stage{stInterp, msOf(ls.Interpreter)},
			Stage{stAlloc, msOf(ls.Allocate)}, Stage{stInvoke, msOf(req - ls.Map - ls.PageIn - ls.Interpreter - ls.Allocate)})
		stages[Restored] = append(stages[Restored], st)
		_ = a.Close()

		// (d) agent prewarmed: on mains, a wake warms the model before the
		// request arrives.
		a, err = startAgent(ctx, agentConfig(state, mains, mc))
		if err != nil {
			return Startup{}, err
		}
		_ = a.Pool().Evict("m")
		asNewProcess(path)
		t = time.Now()
		if _, err := a.Wake(ctx, "bench"); err != nil {
			_ = a.Close()
			return Startup{}, err
		}
		woke := time.Since(t)
		req, err = request(ctx, a, "m", input)
		if err != nil {
			_ = a.Close()
			return Startup{}, err
		}
		toFirst[Prewarmed] = append(toFirst[Prewarmed], msOf(woke+req))
		first[Prewarmed] = append(first[Prewarmed], msOf(req))
		for range 3 {
			d, err := request(ctx, a, "m", input)
			if err != nil {
				_ = a.Close()
				return Startup{}, err
			}
			agentSteady = append(agentSteady, msOf(d))
		}
		ls = a.Pool().Models()[0].LastLoad.Stages
		// The wake's own stages (its plan also decides, which is the rest).
		stages[Prewarmed] = append(stages[Prewarmed], []Stage{{stLoad, msOf(ls.Map + ls.PageIn)},
			{stInterp, msOf(ls.Interpreter)}, {stAlloc, msOf(ls.Allocate)}, {stInvoke, msOf(ls.FirstInvoke)},
			{stPlan, msOf(woke - ls.Cold())}, {stRequest, msOf(req)}})
		_ = a.Close()
	}
	out := Startup{Model: model, ToFirst: map[string]Dist{}, FirstRequest: map[string]Dist{}, Steady: dist(steady),
		AgentSteady: dist(agentSteady), Stages: map[string][]Stage{}}
	for _, c := range Configs {
		out.ToFirst[c] = dist(toFirst[c])
		out.FirstRequest[c] = dist(first[c])
		out.Stages[c] = medianStages(stages[c])
	}
	return out, nil
}

// Stage categories shared by every configuration's waterfall.
const (
	stState   = "state open + restore"
	stLoad    = "load model (read/copy or map/page-in)"
	stInterp  = "interpreter"
	stAlloc   = "allocate"
	stInvoke  = "first (warm-up) invoke"
	stPrewarm = "prewarm at start"
	stPlan    = "plan (power, ranking)"
	stRequest = "warm request"
)

// agentStages splits an agent start from its report, plus the request.
// Calibration is not a stage: it runs in the background after the start.
func agentStages(r agent.StartupReport, req time.Duration) []Stage {
	st := []Stage{{stState, msOf(r.Timings.StateOpen + r.Timings.Restore)}, {stPrewarm, msOf(r.Timings.Prewarm)}}
	if req > 0 {
		st = append(st, Stage{stRequest, msOf(req)})
	}
	return st
}

func medianStages(runs [][]Stage) []Stage {
	if len(runs) == 0 {
		return nil
	}
	out := make([]Stage, len(runs[0]))
	for i := range out {
		vals := make([]float64, len(runs))
		for j, r := range runs {
			vals[j] = r[i].Ms
		}
		out[i] = Stage{runs[0][i].Name, quantile(vals, 0.5)}
	}
	return out
}
