package bench

// The zoo a trace replays over: a folder of models (ids = file names
// without .tflite) and what each costs cold and warm, measured once on
// this machine with the real runtime.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/tflite"
)

// zooShared are the shared models in the zoo: every real one that runs on
// a CPU, from a 1 KiB float graph to deeplab's large arena.
var zooShared = []string{
	"xor_model.tflite",
	"keras_lstm_mnist_ptq.tflite",
	"mobilenet_v1_0.25_128_quant.tflite",
	"mobilenet_v2_1.0_224_quant.tflite",
	"mobilenet_v2_1.0_224_inat_bird_quant.tflite",
	"deeplabv3_mnv2_pascal_quant.tflite",
}

// zooGenerated are the generated models' sizes: 1 to 256 MiB, enough of
// them that the largest is well under a quarter of the zoo's footprint.
var zooGenerated = []int64{1 << 20, 4 << 20, 16 << 20, 32 << 20, 64 << 20, 96 << 20, 128 << 20, 160 << 20, 192 << 20, 224 << 20, 256 << 20}

// quickGenerated keeps tests fast.
var quickGenerated = []int64{1 << 20, 4 << 20, 16 << 20}

// BuildZoo fills dir with the zoo: links to the shared models and the
// generated ones (written once; an existing file is kept). seed 0 gives
// the generated sizes above; any other seed moves each size by up to
// ±25 % and the weights with it: another seed, another zoo.
func BuildZoo(dir, shared string, quick bool, seed int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, m := range zooShared {
		src, err := filepath.Abs(filepath.Join(shared, m))
		if err != nil {
			return err
		}
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("zoo: %w", err)
		}
		dst := filepath.Join(dir, m)
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		if err := os.Symlink(src, dst); err != nil {
			return fmt.Errorf("zoo: %w", err)
		}
	}
	sizes := zooGenerated
	if quick {
		sizes = quickGenerated
	}
	rng := rand.New(rand.NewSource(seed))
	for _, size := range sizes {
		if seed != 0 {
			size = int64(float64(size) * (0.75 + 0.5*rng.Float64()))
		}
		if _, err := genModelSeeded(dir, size, seed); err != nil {
			return fmt.Errorf("zoo: %w", err)
		}
	}
	return nil
}

// zooModels lists dir's models: id → path, ids sorted.
func zooModels(dir string) (ids []string, paths map[string]string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	paths = map[string]string{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".tflite") {
			continue
		}
		id := strings.TrimSuffix(e.Name(), ".tflite")
		paths[id] = filepath.Join(dir, e.Name())
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, nil, fmt.Errorf("no .tflite models in %s", dir)
	}
	slices.Sort(ids)
	return ids, paths, nil
}

// Cost is what one model costs here: a full cold load's stages and the
// bytes it holds warm, the median of a few loads.
type Cost struct {
	Size int64 `json:"size"` // file, mapped
	Heap int64 `json:"heap"` // C heap per interpreter
	// The stages of a full cold load, in ns.
	Map         time.Duration `json:"map_ns"`
	PageIn      time.Duration `json:"page_in_ns"`
	Interpreter time.Duration `json:"interpreter_ns"`
	Allocate    time.Duration `json:"allocate_ns"`
	FirstInvoke time.Duration `json:"first_invoke_ns"`
	Steady      time.Duration `json:"steady_ns"`
}

func costOf(size, heap int64, s tflite.Stages) Cost {
	return Cost{Size: size, Heap: heap, Map: s.Map, PageIn: s.PageIn, Interpreter: s.Interpreter, Allocate: s.Allocate, FirstInvoke: s.FirstInvoke, Steady: s.Steady}
}

// Stages are the cold load's stages.
func (c Cost) Stages() tflite.Stages {
	return tflite.Stages{Map: c.Map, PageIn: c.PageIn, Interpreter: c.Interpreter, Allocate: c.Allocate, FirstInvoke: c.FirstInvoke, Steady: c.Steady}
}

// Cold is what a cold request pays: the load and a first invoke.
func (c Cost) Cold() time.Duration { return c.Stages().Cold() }

// Footprint is what the model holds warm.
func (c Cost) Footprint() int64 { return c.Size + c.Heap }

// costsFile caches the measured costs beside the zoo, keyed by each
// file's size and modification time, and by whether its page cache is
// whole 2 MiB folios (cacheHuge): that changes a large model's first
// invoke several times over.
const costsFile = ".costs.json"

type costsCache map[string]cachedCost

type cachedCost struct {
	Key  string `json:"key"`
	Cost Cost   `json:"cost"`
}

func fileKey(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano()), nil
}

// zooCosts measures (or reads back) the cost of every model in dir: reps
// loads each in a fresh unbounded pool, the page cache warm (as in the
// real replay on this machine).
func zooCosts(ctx context.Context, dir string, reps int, huge bool) (map[string]Cost, error) {
	ids, paths, err := zooModels(dir)
	if err != nil {
		return nil, err
	}
	cache := costsCache{}
	if b, err := os.ReadFile(filepath.Join(dir, costsFile)); err == nil {
		_ = json.Unmarshal(b, &cache) // a bad cache is measured again
	}
	out := map[string]Cost{}
	dirty := false
	for _, id := range ids {
		key, err := fileKey(paths[id])
		if err != nil {
			return nil, err
		}
		whole, err := cacheHuge(paths[id], huge)
		if err != nil {
			return nil, err
		}
		key += fmt.Sprintf("/huge=%t", whole)
		if c, ok := cache[id]; ok && c.Key == key {
			out[id] = c.Cost
			continue
		}
		c, err := measureCost(ctx, paths[id], reps)
		if err != nil {
			return nil, fmt.Errorf("measure %s: %w", id, err)
		}
		out[id] = c
		cache[id] = cachedCost{key, c}
		dirty = true
	}
	if dirty {
		b, _ := json.MarshalIndent(cache, "", "  ")
		_ = os.WriteFile(filepath.Join(dir, costsFile), b, 0o644) // a cache: losing it costs a measurement
	}
	return out, nil
}

func measureCost(ctx context.Context, path string, reps int) (Cost, error) {
	var runs []Cost
	for range max(reps, 1) {
		p := tflite.NewPool(tflite.PoolOptions{Interpreter: tflite.Options{Threads: 2}})
		if err := p.Register(tflite.ModelSpec{ID: "m", Path: path}); err != nil {
			_ = p.Close()
			return Cost{}, err
		}
		rep, _, err := p.Prewarm(ctx, "m")
		if err != nil {
			_ = p.Close()
			return Cost{}, err
		}
		ms := p.Models()
		_ = p.Close()
		runs = append(runs, costOf(rep.Footprint.Mapped, ms[0].Bytes-rep.Footprint.Mapped, rep.Stages))
	}
	slices.SortFunc(runs, func(a, b Cost) int { return int(a.Cold() - b.Cold()) })
	return runs[len(runs)/2], nil
}

// cacheHuge has the page cache hold a zoo model in 2 MiB folios, as the
// agent does for the models it serves ([pool] huge_pages), so measured
// costs and replays see what the agent would; with reread false it only
// looks. It reports whether every whole 2 MiB block is (false on kernels
// without huge file folios, and for files under tflite.HugeMin).
func cacheHuge(path string, reread bool) (bool, error) {
	r, err := tflite.CacheHuge(path, reread)
	if err != nil {
		return false, fmt.Errorf("huge pages for %s: %w", path, err)
	}
	return r.Size >= tflite.HugeMin && r.Whole(), nil
}
