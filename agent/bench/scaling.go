package bench

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/tflite"
)

// Scaling is load time and memory growth against model size, for mapped
// loading (the agent) and reading into the heap (naive).
type Scaling struct {
	Points []ScalePoint
}

// ScalePoint is one model size.
type ScalePoint struct {
	SizeMiB                    float64
	MappedMs, HeapMs           Dist
	MappedAnonMiB, HeapAnonMiB float64 // anonymous memory growth with the model loaded
}

func anonBytes() int64 {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Anonymous:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func settle() {
	runtime.GC()
	debug.FreeOSMemory()
}

func scaling(o Options, work string) (Scaling, error) {
	sizes := []int64{1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 512 << 20}
	reps := 3
	if o.Quick {
		sizes, reps = []int64{1 << 20, 8 << 20}, 1
	}
	var out Scaling
	for _, size := range sizes {
		p, err := genModel(work, size)
		if err != nil {
			return out, err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return out, err
		}
		var mapped, heap []float64
		var mappedAnon, heapAnon []float64
		for range reps {
			settle()
			before := anonBytes()
			t := time.Now()
			m, err := tflite.LoadModel(p)
			if err != nil {
				return out, err
			}
			mapped = append(mapped, msOf(time.Since(t)))
			settle()
			mappedAnon = append(mappedAnon, float64(anonBytes()-before)/(1<<20))
			_ = m.Close()

			settle()
			before = anonBytes()
			t = time.Now()
			h, err := loadIntoHeap(p)
			if err != nil {
				return out, err
			}
			heap = append(heap, msOf(time.Since(t)))
			settle() // the Go copy is garbage now; the C copy stays
			heapAnon = append(heapAnon, float64(anonBytes()-before)/(1<<20))
			if err := tflite.Free(h); err != nil {
				return out, err
			}
		}
		out.Points = append(out.Points, ScalePoint{SizeMiB: float64(fi.Size()) / (1 << 20),
			MappedMs: dist(mapped), HeapMs: dist(heap),
			MappedAnonMiB: quantile(mappedAnon, 0.5), HeapAnonMiB: quantile(heapAnon, 0.5)})
		_ = os.Remove(p)
	}
	return out, nil
}
