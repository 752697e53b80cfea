package bench

import (
	"context"
	"math/rand"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-agent/edge-agent/agent"
)

// Serving compares latency under a bursty trace and throughput.
type Serving struct {
	Requests int
	// Latency (ms) over the trace, per configuration: every request,
	// including each model's first.
	Latency map[string]Dist
	// Samples keep the raw latencies for the CDF chart.
	Samples map[string][]float64
	// Throughput (requests/s) with two clients on one model.
	Throughput      map[string]float64
	ThroughputModel string
	// AcquireReleaseNs is the pool's own overhead per warm lease.
	AcquireReleaseNs float64
}

var servingModels = []string{
	"mobilenet_v1_0.25_128_quant.tflite",
	"mobilenet_v2_1.0_224_quant.tflite",
	"keras_lstm_mnist_ptq.tflite",
	"mobilenet_v2_1.0_224_inat_bird_quant.tflite",
}

// trace is bursts of requests to one model, with idle gaps between them.
type burst struct {
	model int
	n     int
	gap   time.Duration
}

func makeTrace(seed int64, bursts int) []burst {
	rng := rand.New(rand.NewSource(seed))
	weights := []int{4, 3, 2, 1}
	var out []burst
	for range bursts {
		r, m := rng.Intn(10), 0
		for acc := 0; m < len(weights); m++ {
			if acc += weights[m]; r < acc {
				break
			}
		}
		out = append(out, burst{model: m, n: 5 + rng.Intn(15), gap: time.Duration(20+rng.Intn(130)) * time.Millisecond})
	}
	return out
}

func serving(ctx context.Context, o Options, work string) (Serving, error) {
	bursts := 24
	if o.Quick {
		bursts = 6
	}
	trace := makeTrace(7, bursts)
	inputs := make([][]byte, len(servingModels))
	var models []agent.ModelConfig
	for i, m := range servingModels {
		p := filepath.Join(o.Models, m)
		in, err := inputFor(p)
		if err != nil {
			return Serving{}, err
		}
		inputs[i] = in
		models = append(models, agent.ModelConfig{ID: id(i), Path: p})
	}
	s := Serving{Latency: map[string]Dist{}, Samples: map[string][]float64{}, Throughput: map[string]float64{}}

	// Naive: one lazily loaded interpreter per model.
	naive := make([]*naive, len(servingModels))
	for i, m := range servingModels {
		naive[i] = newNaive(filepath.Join(o.Models, m), runtime.NumCPU())
	}
	defer func() {
		for _, n := range naive {
			n.Close()
		}
	}()
	// Agent: started and prewarmed on mains.
	a, err := startAgent(ctx, agentConfig(filepath.Join(work, "serving-state"), fixtureRoot(work, 0), models...))
	if err != nil {
		return s, err
	}
	defer func() { _ = a.Close() }()

	// Interleave: each burst runs on both, naive first.
	var out []byte
	for _, b := range trace {
		for range b.n {
			t := time.Now()
			if out, err = naive[b.model].Infer(inputs[b.model], out); err != nil {
				return s, err
			}
			s.Samples[Naive] = append(s.Samples[Naive], msOf(time.Since(t)))
			d, err := request(ctx, a, id(b.model), inputs[b.model])
			if err != nil {
				return s, err
			}
			s.Samples[Prewarmed] = append(s.Samples[Prewarmed], msOf(d))
		}
		time.Sleep(b.gap)
	}
	s.Requests = len(s.Samples[Naive])
	for k, v := range s.Samples {
		s.Latency[k] = dist(v)
	}

	// Throughput: two clients, one model, for a fixed time.
	s.ThroughputModel = servingModels[0]
	dur := 3 * time.Second
	if o.Quick {
		dur = 500 * time.Millisecond
	}
	nv := newNaive(filepath.Join(o.Models, servingModels[0]), runtime.NumCPU())
	s.Throughput["naive (1 interpreter, mutex)"] = closedLoop(dur, func() error {
		_, err := nv.Infer(inputs[0], nil)
		return err
	})
	nv.Close()
	for _, per := range []int{1, 2} {
		cfg := agentConfig(filepath.Join(work, "tp-state"), fixtureRoot(work, 0), models[0])
		cfg.Pool.InterpretersPerModel = per
		cfg.Pool.Threads = 2 / per // the same two cores either way
		ta, err := startAgent(ctx, cfg)
		if err != nil {
			return s, err
		}
		key := "agent, 1 interpreter × 2 threads"
		if per == 2 {
			key = "agent, 2 interpreters × 1 thread"
		}
		s.Throughput[key] = closedLoop(dur, func() error {
			_, err := request(ctx, ta, id(0), inputs[0])
			return err
		})
		_ = ta.Close()
	}

	// The pool's own overhead, on a warm hit.
	pool := a.Pool()
	n := 200000
	if o.Quick {
		n = 20000
	}
	t := time.Now()
	for range n {
		l, err := pool.Acquire(ctx, id(2))
		if err != nil {
			return s, err
		}
		l.Release()
	}
	s.AcquireReleaseNs = float64(time.Since(t).Nanoseconds()) / float64(n)
	return s, nil
}

func id(i int) string { return []string{"v1", "v2", "lstm", "bird", "g1", "g2"}[i] }

// closedLoop runs f from two clients for dur and returns requests/s.
func closedLoop(dur time.Duration, f func() error) float64 {
	var n atomic.Int64
	stop := time.Now().Add(dur)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if f() != nil {
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / dur.Seconds()
}
