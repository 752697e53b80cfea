package bench_test

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edge-agent/edge-agent/agent/bench"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// Zoos differ per seed (generated models' sizes and files), and the same
// seed builds the same zoo; seed 0 keeps the fixed sizes.
func TestZooSeeds(t *testing.T) {
	shared := tflitetest.ModelsDir(t)
	gen := func(seed int64) map[string]int64 {
		dir := t.TempDir()
		if err := bench.BuildZoo(dir, shared, true, seed); err != nil {
			t.Fatal(err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "gen-") {
				fi, err := os.Stat(filepath.Join(dir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				out[e.Name()] = fi.Size()
			}
		}
		return out
	}
	z0, a, b, c := gen(0), gen(1), gen(1), gen(2)
	if len(a) != 3 || len(c) != 3 || !maps.Equal(a, b) || maps.Equal(a, c) || maps.Equal(a, z0) {
		t.Fatalf("seed 0 %v, seed 1 %v and again %v, seed 2 %v: want the same seed equal, others different", z0, a, b, c)
	}
	if !slices.Contains(slices.Collect(maps.Keys(z0)), "gen-1048576.tflite") {
		t.Fatalf("seed 0: %v, want the fixed sizes", z0)
	}
}
