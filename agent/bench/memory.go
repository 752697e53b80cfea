package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/modelgen"
)

// Memory runs one request trace over more models than fit the budget,
// with cost-aware eviction, GDSF and plain LRU.
type Memory struct {
	Budget   int64
	SumBytes int64 // what all models would hold together
	Requests int
	Policies map[string]PolicyRun
}

// PolicyRun is one policy on the trace.
type PolicyRun struct {
	Hits, Misses, Evictions uint64
	HitRate                 float64
	ColdPaidMs              float64 // cold-start time paid by requests (loads)
	ColdSavedMs             float64 // cold-start time hits did not pay
	MaxAccounted            int64   // the pool's accounted bytes, at most
	PeakRSS, SteadyRSS      int64   // process RSS
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func genModel(dir string, size int64) (string, error) { return genModelSeeded(dir, size, 0) }

// genModelSeeded writes a generated model of about size bytes whose
// weights depend on seed (0: genModel's); other seeds are other files.
func genModelSeeded(dir string, size, seed int64) (string, error) {
	spec, err := modelgen.ForSize(size)
	if err != nil {
		return "", err
	}
	spec.Seed = seed
	name := fmt.Sprintf("gen-%d.tflite", size)
	if seed != 0 {
		name = fmt.Sprintf("gen-%d-s%d.tflite", size, seed)
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	if err := modelgen.Write(f, spec); err != nil {
		f.Close()
		return "", err
	}
	return p, f.Close()
}

func memory(ctx context.Context, o Options, work string) (Memory, error) {
	paths := []string{}
	for _, m := range servingModels {
		paths = append(paths, filepath.Join(o.Models, m))
	}
	for _, size := range []int64{16 << 20, 24 << 20} {
		p, err := genModel(work, size)
		if err != nil {
			return Memory{}, err
		}
		paths = append(paths, p)
	}
	inputs := make([][]byte, len(paths))
	for i, p := range paths {
		in, err := inputFor(p)
		if err != nil {
			return Memory{}, err
		}
		inputs[i] = in
	}
	// Footprints, measured once, size the budget: about half of everything.
	probe := tflite.NewPool(tflite.PoolOptions{})
	for i, p := range paths {
		if err := probe.Register(tflite.ModelSpec{ID: id(i), Path: p}); err != nil {
			_ = probe.Close()
			return Memory{}, err
		}
		if _, _, err := probe.Prewarm(ctx, id(i)); err != nil {
			_ = probe.Close()
			return Memory{}, err
		}
	}
	var sum int64
	for _, m := range probe.Models() {
		sum += m.Bytes
	}
	_ = probe.Close()
	out := Memory{SumBytes: sum, Budget: sum / 2, Policies: map[string]PolicyRun{}}

	// The trace: a hot pair of small costly models and a stream over the
	// rest, including two big generated models that are cheap to reload.
	n := 300
	if o.Quick {
		n = 60
	}
	rng := rand.New(rand.NewSource(11))
	trace := make([]int, n)
	for i := range trace {
		if rng.Intn(10) < 6 {
			trace[i] = []int{0, 2}[rng.Intn(2)]
		} else {
			trace[i] = rng.Intn(len(paths))
		}
	}
	out.Requests = n
	for _, name := range tflite.Policies {
		policy, _ := tflite.NewPolicy(name, tflite.PolicyOptions{})
		run := PolicyRun{}
		var coldPaid time.Duration
		pool := tflite.NewPool(tflite.PoolOptions{Budget: out.Budget, Policy: policy, Interpreter: tflite.Options{Threads: 2},
			OnLoad: func(e tflite.LoadEvent) { coldPaid += e.Report.Stages.Cold() }})
		for i, p := range paths {
			if err := pool.Register(tflite.ModelSpec{ID: id(i), Path: p}); err != nil {
				_ = pool.Close()
				return out, err
			}
		}
		for _, m := range trace {
			l, err := pool.Acquire(ctx, id(m))
			if err != nil {
				_ = pool.Close()
				return out, err
			}
			_, err = infer.Run(l, infer.Request{Tensor: inputs[m], Raw: true})
			l.Release()
			if err != nil {
				_ = pool.Close()
				return out, err
			}
			s := pool.Stats()
			run.MaxAccounted = max(run.MaxAccounted, s.BytesInUse)
			run.PeakRSS = max(run.PeakRSS, rssBytes())
		}
		s := pool.Stats()
		run.Hits, run.Misses, run.Evictions = s.Hits+s.Waits, s.Misses, s.Evictions
		run.HitRate = float64(run.Hits) / float64(n)
		run.ColdPaidMs = msOf(coldPaid)
		run.ColdSavedMs = msOf(s.ColdSaved)
		run.SteadyRSS = rssBytes()
		_ = pool.Close()
		out.Policies[name] = run
	}
	return out, nil
}
