package tflite_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
	tfl "github.com/tphakala/go-tflite"
)

var benchModels = []string{
	"xor_model.tflite",
	"keras_lstm_mnist_ptq.tflite",
	"mobilenet_v1_0.25_128_quant.tflite",
	"mobilenet_v2_1.0_224_quant.tflite",
	"deeplabv3_mnv2_pascal_quant.tflite",
}

// BenchmarkAcquireRelease is the pool's own overhead on a warm hit.
func BenchmarkAcquireRelease(b *testing.B) {
	p := tflite.NewPool(tflite.PoolOptions{})
	defer p.Close()
	if err := p.Register(tflite.ModelSpec{ID: "xor", Path: tflitetest.Path(b, "xor_model.tflite")}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := p.Prewarm(ctx, "xor"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		l, err := p.Acquire(ctx, "xor")
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
	}
}

// BenchmarkAcquireReleaseParallel contends for two interpreters of a model.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	p := tflite.NewPool(tflite.PoolOptions{PerModel: 2})
	defer p.Close()
	if err := p.Register(tflite.ModelSpec{ID: "xor", Path: tflitetest.Path(b, "xor_model.tflite")}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l, err := p.Acquire(ctx, "xor")
			if err != nil {
				b.Error(err)
				return
			}
			l.Release()
		}
	})
}

// BenchmarkStagedLoad is a whole cold start per iteration, with the mean of
// each stage reported as its own metric (ms).
func BenchmarkStagedLoad(b *testing.B) {
	for _, name := range benchModels {
		b.Run(name, func(b *testing.B) {
			path := tflitetest.Path(b, name)
			var sum tflite.Stages
			for b.Loop() {
				m, it, rep, err := tflite.LoadStaged(path, tflite.LoadOptions{PageIn: true, Interpreter: tflite.Options{Threads: 2}})
				if err != nil {
					b.Fatal(err)
				}
				it.Close()
				m.Close()
				s := rep.Stages
				sum.Map += s.Map
				sum.PageIn += s.PageIn
				sum.Interpreter += s.Interpreter
				sum.Allocate += s.Allocate
				sum.FirstInvoke += s.FirstInvoke
				sum.Steady += s.Steady
			}
			n := float64(b.N) * float64(time.Millisecond)
			b.ReportMetric(float64(sum.Map)/n, "map-ms")
			b.ReportMetric(float64(sum.PageIn)/n, "pagein-ms")
			b.ReportMetric(float64(sum.Interpreter)/n, "interp-ms")
			b.ReportMetric(float64(sum.Allocate)/n, "alloc-ms")
			b.ReportMetric(float64(sum.FirstInvoke)/n, "first-ms")
			b.ReportMetric(float64(sum.Steady)/n, "steady-ms")
		})
	}
}

// BenchmarkInvoke is the steady invoke of a warm interpreter.
func BenchmarkInvoke(b *testing.B) {
	for _, name := range benchModels {
		b.Run(name, func(b *testing.B) {
			m, it, _, err := tflite.LoadStaged(tflitetest.Path(b, name), tflite.LoadOptions{Interpreter: tflite.Options{Threads: 2}})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			defer it.Close()
			b.ReportAllocs()
			for b.Loop() {
				if err := it.Invoke(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkModelLoad compares mapping a 64 MiB model with what a hand-rolled
// loader does: read the file into the heap and hand the bytes to NewModel,
// which copies them into the C heap.
func BenchmarkModelLoad(b *testing.B) {
	path, _ := tflitetest.Generate(b, b.TempDir(), 64<<20)
	b.Run("mapped", func(b *testing.B) {
		for b.Loop() {
			m, err := tflite.LoadModel(path)
			if err != nil {
				b.Fatal(err)
			}
			m.Close()
		}
	})
	b.Run("heap", func(b *testing.B) {
		for b.Loop() {
			data, err := os.ReadFile(path)
			if err != nil {
				b.Fatal(err)
			}
			if m := tfl.NewModel(data); m == nil {
				b.Fatal("NewModel returned nil")
			}
			// go-tflite frees this copy only when the GC runs its cleanup:
			// part of what the naive path costs.
		}
	})
}
