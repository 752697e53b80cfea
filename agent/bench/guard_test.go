package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent/bench"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// guardCosts are a zoo's measured costs (the `zoo` subcommand's, 6 shared
// and 11 generated models of 1–256 MiB, measured on a 2-core VM) checked
// in, so the guard replays the same problem on every machine.
func guardCosts(t *testing.T) (dir string, costs map[string]bench.Cost) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "costs.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &costs); err != nil {
		t.Fatal(err)
	}
	// A simulated replay reads only the folder's names.
	dir = t.TempDir()
	for id := range costs {
		if err := os.WriteFile(filepath.Join(dir, id+".tflite"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, costs
}

// The eviction headline, guarded: over 5 seeds × 4 trace shapes × a
// quarter, half and three quarters of the zoo's footprint, simulated with
// the checked-in costs, the default policy pays no more request cold time
// than LRU and does no more total load work (cold time + its own
// background loads) than LRU, in every cell.
func TestDefaultPolicyBeatsLRUOnBothAxes(t *testing.T) {
	tflitetest.Long(t)
	if testing.Short() {
		t.Skip("replays 120 simulated traces")
	}
	dir, costs := guardCosts(t)
	ids := slices.Sorted(maps.Keys(costs))
	var fp int64
	for _, c := range costs {
		fp += c.Footprint()
	}
	// Every shape; the diurnal one over 8 hours (a third of its day
	// cycle), not 24, so the guard runs in seconds.
	for _, shape := range bench.TraceShapes {
		var dur time.Duration
		if shape == "diurnal" {
			dur = 8 * time.Hour
		}
		for seed := int64(1); seed <= 5; seed++ {
			tr, err := bench.GenerateTrace(bench.TraceOptions{Shape: shape, Models: ids, Seed: seed, Duration: dur})
			if err != nil {
				t.Fatal(err)
			}
			for _, share := range []float64{.25, .5, .75} {
				cell := fmt.Sprintf("%s seed %d %.0f%%", shape, seed, 100*share)
				r := map[string]bench.ReplayResult{}
				for _, pol := range []string{"lru", tflite.DefaultPolicy} {
					res, err := bench.Replay(context.Background(), bench.ReplayOptions{Trace: tr, Models: dir, Budget: int64(share * float64(fp)),
						Policy: pol, Simulate: true, Costs: costs})
					if err != nil {
						t.Fatalf("%s %s: %v", cell, pol, err)
					}
					r[pol] = res
				}
				lru, def := r["lru"], r[tflite.DefaultPolicy]
				t.Logf("%s: cold LRU ÷ default %.2f×, total load work %.2f× (%d background loads, %d wasted)", cell,
					lru.ColdMs/def.ColdMs, lru.TotalLoadMs/def.TotalLoadMs, def.BackgroundLoads, def.BackgroundWasted)
				if def.ColdMs > lru.ColdMs {
					t.Errorf("%s: %s paid %.0f ms cold, LRU %.0f", cell, tflite.DefaultPolicy, def.ColdMs, lru.ColdMs)
				}
				if def.TotalLoadMs > lru.TotalLoadMs {
					t.Errorf("%s: %s did %.0f ms of load work (%.0f cold + %.0f in %d background loads), LRU %.0f", cell, tflite.DefaultPolicy,
						def.TotalLoadMs, def.ColdMs, def.BackgroundMs, def.BackgroundLoads, lru.TotalLoadMs)
				}
			}
		}
	}
}

// A simulated warm request that invokes while a background load runs
// shares the cores with it: the time it loses is counted (contention_ms)
// as part of the cold time requests paid. (The periodic trace of seed 3
// at three quarters of the footprint has the default rewarm a model while
// others are served warm.)
func TestReplayCountsContention(t *testing.T) {
	dir, costs := guardCosts(t)
	ids := slices.Sorted(maps.Keys(costs))
	var fp int64
	for _, c := range costs {
		fp += c.Footprint()
	}
	tr, err := bench.GenerateTrace(bench.TraceOptions{Shape: "periodic", Models: ids, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	run := func(cores int) bench.ReplayResult {
		r, err := bench.Replay(context.Background(), bench.ReplayOptions{Trace: tr, Models: dir, Budget: int64(.75 * float64(fp)), Simulate: true, Costs: costs, Cores: cores})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	two, four := run(2), run(4)
	if two.BackgroundLoads == 0 || two.ContentionMs <= 0 || two.ContentionMs > two.ColdMs {
		t.Fatalf("2 cores: %d background loads, contention %.1f ms of %.1f ms cold", two.BackgroundLoads, two.ContentionMs, two.ColdMs)
	}
	// On 4 cores the load and a 2-thread invoke do not meet.
	if four.ContentionMs != 0 || four.ColdMs != two.ColdMs-two.ContentionMs {
		t.Fatalf("4 cores: contention %.1f ms, cold %.1f ms; want none, and 2 cores' cold time less its contention (%.1f)", four.ContentionMs, four.ColdMs, two.ColdMs-two.ContentionMs)
	}
}
