package tflite_test

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/modelgen"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// answer runs a generated model once on a fixed input and checks it
// against the reference computation.
func answer(t *testing.T, path string, spec modelgen.Spec) {
	t.Helper()
	m, err := tflite.LoadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	it, _, _, err := tflite.Warm(m, tflite.Options{Threads: 1}, tflite.WarmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	in := make([]float32, spec.Width)
	for i := range in {
		in[i] = float32(i%7) / 7
	}
	got, want := runFloat(t, it, in), referenceOf(spec, in)
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-3*max(1, math.Abs(want[i])) {
			t.Fatalf("output %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// dropCache drops the file's pages, as after a reboot.
func dropCache(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tflite.DropCacheForTest(f); err != nil {
		t.Fatal(err)
	}
}

// CacheHuge drops and reads a model in again: a model mapped meanwhile
// keeps answering right, the file answers right afterwards, and on a
// kernel with huge file folios every whole 2 MiB block is then mapped
// with one entry. Files under HugeMin and missing files are reported.
func TestCacheHuge(t *testing.T) {
	dir := t.TempDir()
	path, spec := tflitetest.Generate(t, dir, 24<<20)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	r, err := tflite.CacheHuge(path, false)
	if err != nil || r.Size != fi.Size() || r.Reread != 0 {
		t.Fatalf("check only: %+v, %v; want size %d and nothing read again", r, err, fi.Size())
	}

	// A live mapping of the model: its pages cannot be dropped, and it
	// must not notice the attempt.
	m, err := tflite.LoadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	it, _, _, err := tflite.Warm(m, tflite.Options{Threads: 1}, tflite.WarmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tflite.CacheHuge(path, true); err != nil {
		t.Fatal(err)
	}
	in := make([]float32, spec.Width)
	in[0] = 1
	got, want := runFloat(t, it, in), referenceOf(spec, in)
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-3*max(1, math.Abs(want[i])) {
			t.Fatalf("mapped model after CacheHuge: output %d = %v, want %v", i, got[i], want[i])
		}
	}
	it.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	r, err = tflite.CacheHuge(path, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after CacheHuge: %d of %d bytes mapped huge, %d read again, took %s", r.Huge, r.Size, r.Reread, r.Took)
	if r.Huge == 0 {
		t.Log("this kernel keeps the file in small pages: nothing more to check")
	} else if !r.Whole() {
		t.Errorf("%d of %d bytes huge after a reread of an unmapped file: want every whole 2 MiB block", r.Huge, r.Size)
	}
	answer(t, path, spec)

	// PageIn reads an uncached large file in through a huge mapping.
	dropCache(t, path)
	if err := tflite.PageIn(path); err != nil {
		t.Fatal(err)
	}
	res, size, err := tflite.Residency(path)
	if err != nil || res != size {
		t.Fatalf("after PageIn: %d of %d bytes resident, %v", res, size, err)
	}
	if after, err := tflite.CacheHuge(path, false); err != nil || (r.Huge > 0 && !after.Whole()) {
		t.Errorf("after PageIn of a dropped file: %+v, %v; want whole 2 MiB blocks", after, err)
	}
	answer(t, path, spec)

	small, _ := tflitetest.Generate(t, dir, 1<<20)
	if r, err := tflite.CacheHuge(small, true); err != nil || r.Huge != 0 || r.Reread != 0 || r.Size == 0 {
		t.Errorf("file under HugeMin: %+v, %v; want its size and nothing done", r, err)
	}
	if _, err := tflite.CacheHuge(filepath.Join(dir, "missing.tflite"), true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}

// BenchmarkFirstInvokeHugePages is the cold start of a 64 MiB generated
// model whose file the page cache holds as written in 4 KiB writes (small
// folios, as after cp(1) or a model update written that way) against 2 MiB
// folios (CacheHuge): the first invoke touches every page of the fresh
// mapping.
func BenchmarkFirstInvokeHugePages(b *testing.B) {
	for _, huge := range []bool{false, true} {
		name := "small-pages"
		if huge {
			name = "huge-pages"
		}
		b.Run(name, func(b *testing.B) {
			gen, _ := tflitetest.Generate(b, b.TempDir(), 64<<20)
			path := gen + ".copy"
			tflitetest.CopyInPages(b, gen, path)
			if huge {
				if _, err := tflite.CacheHuge(path, true); err != nil {
					b.Fatal(err)
				}
			}
			r, err := tflite.CacheHuge(path, false)
			if err != nil {
				b.Fatal(err)
			}
			var sum tflite.Stages
			for b.Loop() {
				m, it, rep, err := tflite.LoadStaged(path, tflite.LoadOptions{Interpreter: tflite.Options{Threads: 2}})
				if err != nil {
					b.Fatal(err)
				}
				it.Close()
				m.Close()
				sum.Map += rep.Stages.Map
				sum.FirstInvoke += rep.Stages.FirstInvoke
				sum.Steady += rep.Stages.Steady
			}
			n := float64(b.N) * 1e6
			b.ReportMetric(float64(r.Huge)/float64(r.Size), "huge-fraction")
			b.ReportMetric(float64(sum.Map)/n, "map-ms")
			b.ReportMetric(float64(sum.FirstInvoke)/n, "first-ms")
			b.ReportMetric(float64(sum.Steady)/n, "steady-ms")
		})
	}
}
