package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/tflite"
)

// FirstStart is a first start with an empty state: a client sends one
// request per model at t=0 (right after the process starts, for the agent
// right after Start returns). Time to the first correct answer per model,
// and until every model answered once, agent vs naive. Then the same for a
// model added at run time (a rescan): time from the rescan to its answer.
type FirstStart struct {
	Models []string
	// ToAnswer[config][model] is t=0 → correct answer, ms.
	ToAnswer map[string]map[string]Dist
	// AllAnswered[config] is t=0 → the last model's answer, ms.
	AllAnswered map[string]Dist
	// Added[config] is rescan (agent) or first request (naive) → answer
	// for the model added at run time, ms; AddedModel names it.
	Added      map[string]Dist
	AddedModel string
	// Wrong counts answers that differed from the naive loop's output.
	Wrong int
}

// firstStartModels are the shared models with an input each: images for
// the classifiers (as a client would send), the MNIST digit for the LSTM.
var firstStartModels = []struct{ id, file, input string }{
	{"xor", "xor_model.tflite", ""},
	{"lstm", "keras_lstm_mnist_ptq.tflite", "mnist_nine.bmp"},
	{"v1", "mobilenet_v1_0.25_128_quant.tflite", "cat.bmp"},
	{"v2", "mobilenet_v2_1.0_224_quant.tflite", "cat.bmp"},
	{"bird", "mobilenet_v2_1.0_224_inat_bird_quant.tflite", "bird.bmp"},
	{"deeplab", "deeplabv3_mnv2_pascal_quant.tflite", "cat.bmp"},
}

type fsModel struct {
	id, path string
	input    []byte
	want     []byte // the naive loop's output: what a correct answer is
}

func firstStart(ctx context.Context, o Options, work string) (FirstStart, error) {
	var models []fsModel
	for _, m := range firstStartModels {
		if o.Quick && m.id == "deeplab" {
			continue
		}
		path := filepath.Join(o.Models, m.file)
		in, err := inputFor(path)
		if err != nil {
			return FirstStart{}, err
		}
		if m.input != "" {
			info, err := tflite.Inspect(path, nil)
			if err != nil {
				return FirstStart{}, err
			}
			x, err := infer.FromFile(filepath.Join(o.Models, m.input), info.Inputs[0], infer.DefaultNormalization, 0)
			if err != nil {
				return FirstStart{}, err
			}
			in = x.Bytes
		}
		models = append(models, fsModel{id: m.id, path: path, input: in})
	}
	out := FirstStart{ToAnswer: map[string]map[string]Dist{}, AllAnswered: map[string]Dist{}, Added: map[string]Dist{}}
	for _, m := range models {
		out.Models = append(out.Models, m.id)
	}
	addedIdx := len(models) - 1
	if o.Quick {
		addedIdx = 2
	}
	out.AddedModel = models[addedIdx].id
	to := map[string]map[string][]float64{Naive: {}, Cold: {}}
	all := map[string][]float64{}
	addedMs := map[string][]float64{}

	for rep := range o.Reps {
		// Naive: a program that loads each model at its first request, one
		// goroutine per request, one thread per core.
		dropAll(models)
		t0 := time.Now()
		res, err := naiveFirst(models)
		if err != nil {
			return out, err
		}
		last := 0.0
		for i, m := range models {
			if rep == 0 {
				models[i].want = res[i].out
			}
			d := msOf(res[i].at.Sub(t0))
			to[Naive][m.id] = append(to[Naive][m.id], d)
			last = max(last, d)
		}
		all[Naive] = append(all[Naive], last)

		// The agent on an empty state: the same requests right after Start.
		dropAll(models)
		dir := filepath.Join(work, fmt.Sprintf("firststart-%d", rep))
		modelsDir := filepath.Join(dir, "models")
		if err := os.MkdirAll(modelsDir, 0o755); err != nil {
			return out, err
		}
		var cfgModels []agent.ModelConfig
		for _, m := range models {
			cfgModels = append(cfgModels, agent.ModelConfig{ID: m.id, Path: m.path})
		}
		t0 = time.Now()
		a, err := startAgent(ctx, agentConfig(filepath.Join(dir, "state"), fixtureRoot(work, 0), cfgModels...))
		if err != nil {
			return out, err
		}
		answers, err := agentFirst(ctx, a, models)
		if err != nil {
			_ = a.Close()
			return out, err
		}
		last = 0
		for i, m := range models {
			if !bytes.Equal(answers[i].out, models[i].want) {
				out.Wrong++
			}
			d := msOf(answers[i].at.Sub(t0))
			to[Cold][m.id] = append(to[Cold][m.id], d)
			last = max(last, d)
		}
		all[Cold] = append(all[Cold], last)
		<-a.Settled()
		_ = a.Close()

		// A model added at run time: the agent serves the others, settled;
		// the new file appears and a rescan registers it.
		added := models[addedIdx] // with its expected output, known since rep 0
		d, err := addedAtRunTime(ctx, dir, work, models, added)
		if err != nil {
			return out, err
		}
		addedMs[Cold] = append(addedMs[Cold], d)
		dropAll([]fsModel{added})
		t0 = time.Now()
		r, err := naiveFirst([]fsModel{added})
		if err != nil {
			return out, err
		}
		addedMs[Naive] = append(addedMs[Naive], msOf(r[0].at.Sub(t0)))
	}
	for c, per := range to {
		out.ToAnswer[c] = map[string]Dist{}
		for id, v := range per {
			out.ToAnswer[c][id] = dist(v)
		}
		out.AllAnswered[c] = dist(all[c])
		out.Added[c] = dist(addedMs[c])
	}
	return out, nil
}

// addedAtRunTime starts an agent on a models dir without the added model,
// waits until it settled, copies the model in, rescans and requests it at
// once. It returns rescan → answer, ms.
func addedAtRunTime(ctx context.Context, dir, work string, models []fsModel, added fsModel) (float64, error) {
	modelsDir := filepath.Join(dir, "models-dir")
	if err := os.MkdirAll(modelsDir, 0o755); err != nil {
		return 0, err
	}
	for _, m := range models {
		if m.id != added.id {
			if err := os.Symlink(m.path, filepath.Join(modelsDir, m.id+".tflite")); err != nil {
				return 0, err
			}
		}
	}
	cfg := agentConfig(filepath.Join(dir, "state-added"), fixtureRoot(work, 0))
	cfg.ModelsDir = modelsDir
	a, err := startAgent(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer func() { _ = a.Close() }()
	<-a.Settled()
	if err := os.Symlink(added.path, filepath.Join(modelsDir, added.id+".tflite")); err != nil {
		return 0, err
	}
	dropAll([]fsModel{added})
	t0 := time.Now()
	if _, err := a.Command(ctx, rescan()); err != nil {
		return 0, err
	}
	r, err := agentFirst(ctx, a, []fsModel{added})
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(r[0].out, added.want) {
		return 0, fmt.Errorf("added model %s answered differently from the naive loop", added.id)
	}
	return msOf(r[0].at.Sub(t0)), nil
}

type answer struct {
	at  time.Time
	out []byte
}

// naiveFirst runs one request per model concurrently, each loading its
// model on the request, and returns when every one answered.
func naiveFirst(models []fsModel) ([]answer, error) {
	return concurrently(models, func(m fsModel) ([]byte, error) {
		n := newNaive(m.path, runtime.NumCPU())
		defer n.Close()
		return n.Infer(m.input, nil)
	})
}

// agentFirst sends one request per model concurrently through the pool.
func agentFirst(ctx context.Context, a *agent.Agent, models []fsModel) ([]answer, error) {
	return concurrently(models, func(m fsModel) ([]byte, error) {
		out, _, err := infer1(ctx, a, m.id, m.input)
		return out, err
	})
}

// concurrently runs f for every model at once and notes when each answered.
func concurrently(models []fsModel, f func(fsModel) ([]byte, error)) ([]answer, error) {
	out := make([]answer, len(models))
	errs := make([]error, len(models))
	var wg sync.WaitGroup
	for i, m := range models {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := f(m)
			out[i], errs[i] = answer{at: time.Now(), out: o}, err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", models[i].id, err)
		}
	}
	return out, nil
}

// dropAll puts the next timed start where a new process would be (see
// asNewProcess).
func dropAll(models []fsModel) {
	paths := make([]string, 0, len(models))
	for _, m := range models {
		paths = append(paths, m.path)
	}
	asNewProcess(paths...)
}

// rescan is the command a deployment tool sends after adding a model file.
func rescan() mqtt.Command { return mqtt.Command{Verb: "rescan"} }
