package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent/bench"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

func benchMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = bench.Main(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

// quickZooTrace makes a quick zoo and two minutes of its heavy trace.
func quickZooTrace(t *testing.T) (zoo, trace string) {
	t.Helper()
	zoo = filepath.Join(t.TempDir(), "zoo")
	if code, _, e := benchMain(t, "zoo", "--out", zoo, "--models", tflitetest.ModelsDir(t), "--quick"); code != 0 {
		t.Fatalf("zoo: %d %s", code, e)
	}
	trace = filepath.Join(t.TempDir(), "trace.csv")
	if code, _, e := benchMain(t, "trace", "--shape", "heavy", "--models", zoo, "--duration", "2m", "--out", trace); code != 0 {
		t.Fatalf("trace: %d %s", code, e)
	}
	return zoo, trace
}

// `replay --json` on a trace file: every policy, real and simulated,
// prints one object with the documented keys, and its counts add up.
func TestReplayCommand(t *testing.T) {
	zoo, trace := quickZooTrace(t)
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(b), "\n") - 1 // the header
	keys := []string{"requests", "hits", "cold_starts", "cold_ms", "evictions", "byte_seconds", "p50_ms", "p95_ms", "p99_ms", "policy", "budget",
		"background_loads", "background_ms", "background_wasted", "total_load_ms", "background_cpu_seconds", "background_joules", "load_cpu_seconds", "load_joules", "best_fixed_set_ms", "contention_ms"}
	for _, policy := range tflite.Policies {
		for _, sim := range []bool{false, true} {
			args := []string{"replay", "--trace", trace, "--models", zoo, "--budget", "40%", "--policy", policy, "--json"}
			if sim {
				args = append(args, "--simulate")
			}
			code, out, e := benchMain(t, args...)
			if code != 0 {
				t.Fatalf("%v: %d %s", args, code, e)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				t.Fatalf("%v: not one JSON object: %v\n%s", args, err, out)
			}
			for _, k := range keys {
				if _, ok := m[k]; !ok {
					t.Errorf("%v: no %q in %s", args, k, out)
				}
			}
			var r bench.ReplayResult
			_ = json.Unmarshal([]byte(out), &r)
			if r.Requests != n || r.Hits+r.ColdStarts+r.Refused != n || r.Policy != policy || r.Budget <= 0 || r.ColdStarts == 0 || r.Evictions == 0 || r.ByteSeconds <= 0 || r.P99Ms < r.P50Ms {
				t.Errorf("%v: %+v (trace of %d)", args, r, n)
			}
			var req, cold int
			var coldMs float64
			for id, pm := range r.PerModel {
				req, cold, coldMs = req+pm.Requests, cold+pm.ColdStarts, coldMs+pm.ColdMs
				if pm.SteadyMs <= 0 {
					t.Errorf("%v: %s counted over a steady invoke of %v ms", args, id, pm.SteadyMs)
				}
			}
			if r.BestFixedSetMs <= 0 || len(r.BestFixedSetKeep) == 0 {
				t.Errorf("%v: best fixed set %.2f ms keeping %v", args, r.BestFixedSetMs, r.BestFixedSetKeep)
			}
			if r.TotalLoadMs != r.ColdMs+r.BackgroundMs || r.BackgroundWasted > r.BackgroundLoads || r.LoadCPUSeconds < r.BackgroundCPUSeconds ||
				(r.ColdStarts > 0 && r.LoadJoules <= 0) || (r.BackgroundLoads > 0) != (r.BackgroundMs > 0 && r.BackgroundJoules > 0) {
				t.Errorf("%v: load work: total %.2f ms = cold %.2f + background %.2f (%d loads, %d wasted, %.3f CPU-s, %.2f J; all loads %.3f CPU-s, %.2f J)",
					args, r.TotalLoadMs, r.ColdMs, r.BackgroundMs, r.BackgroundLoads, r.BackgroundWasted, r.BackgroundCPUSeconds, r.BackgroundJoules, r.LoadCPUSeconds, r.LoadJoules)
			}
			if policy == "lru" && r.BackgroundLoads != 0 {
				t.Errorf("%v: LRU made %d background loads", args, r.BackgroundLoads)
			}
			if req != r.Requests-r.Refused || cold != r.ColdStarts || math.Abs(coldMs-r.ColdMs) > 0.01 {
				t.Errorf("%v: per_model sums to %d requests, %d cold starts, %.2f ms; totals %d (%d refused), %d, %.2f",
					args, req, cold, coldMs, r.Requests, r.Refused, r.ColdStarts, r.ColdMs)
			}
		}
	}
	// Clear errors, nothing replayed: a model not in the folder, a bad
	// line, an unknown policy.
	bad := filepath.Join(t.TempDir(), "bad.csv")
	for _, c := range []struct {
		trace, policy string
		code          int
		want          string
	}{
		{"t_ms,model_id\n0,nope\n", "lru", 1, `"nope" is not in`},
		{"t_ms,model_id\n5,xor_model\n1,xor_model\n", "lru", 1, "goes backwards"},
		{"t_ms,model_id\n0;xor_model\n", "lru", 1, "want t_ms,model_id"},
		{"0,xor_model\n", "fifo", 1, "eviction policy"},
	} {
		if err := os.WriteFile(bad, []byte(c.trace), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, e := benchMain(t, "replay", "--trace", bad, "--models", zoo, "--policy", c.policy, "--simulate")
		if code != c.code || !strings.Contains(e, c.want) {
			t.Errorf("trace %q policy %s: exit %d %q, want %d mentioning %q", c.trace, c.policy, code, e, c.code, c.want)
		}
	}
	if code, _, _ := benchMain(t, "replay", "--models", zoo); code != 2 {
		t.Errorf("replay without --trace: exit %d, want 2", code)
	}
}

// `replay --against` runs two policies in step, request by request, and
// each makes the decisions it makes alone: simulated, both results equal
// their lone replays (but for the wall time); for real, LRU's decisions
// (recency and sizes only) are the same as alone, and the ratios are the
// two results'.
func TestReplayInStep(t *testing.T) {
	zoo, trace := quickZooTrace(t)
	alone := func(policy string, extra ...string) bench.ReplayResult {
		t.Helper()
		code, out, e := benchMain(t, append([]string{"replay", "--trace", trace, "--models", zoo, "--budget", "40%", "--policy", policy, "--json"}, extra...)...)
		if code != 0 {
			t.Fatalf("replay %s %v: %d %s", policy, extra, code, e)
		}
		var r bench.ReplayResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	pair := func(extra ...string) bench.PairResult {
		t.Helper()
		code, out, e := benchMain(t, append([]string{"replay", "--trace", trace, "--models", zoo, "--budget", "40%", "--against", "lru", "--json"}, extra...)...)
		if code != 0 {
			t.Fatalf("replay --against lru %v: %d %s", extra, code, e)
		}
		var p bench.PairResult
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("not one JSON object: %v\n%s", err, out)
		}
		if p.Baseline.Policy != "lru" || p.Policy.Policy != tflite.DefaultPolicy {
			t.Fatalf("pair of %q and %q, want lru and %s", p.Baseline.Policy, p.Policy.Policy, tflite.DefaultPolicy)
		}
		if p.ColdRatio != p.Baseline.ColdMs/p.Policy.ColdMs || p.TotalLoadRatio != p.Baseline.TotalLoadMs/p.Policy.TotalLoadMs || p.P99Ratio != p.Baseline.P99Ms/p.Policy.P99Ms {
			t.Errorf("ratios %.3f/%.3f/%.3f do not follow from %+v and %+v", p.ColdRatio, p.TotalLoadRatio, p.P99Ratio, p.Baseline, p.Policy)
		}
		return p
	}
	same := func(what string, got, want bench.ReplayResult) {
		t.Helper()
		got.WallSecs, want.WallSecs = 0, 0
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if !bytes.Equal(g, w) {
			t.Errorf("%s in step:\n%s\nalone:\n%s", what, g, w)
		}
	}
	sim := pair("--simulate")
	same("simulated lru", sim.Baseline, alone("lru", "--simulate"))
	same("simulated "+tflite.DefaultPolicy, sim.Policy, alone(tflite.DefaultPolicy, "--simulate"))
	real, lru := pair(), alone("lru")
	if real.Baseline.Simulated || real.Baseline.ColdStarts != lru.ColdStarts || real.Baseline.Evictions != lru.Evictions || real.Baseline.Hits != lru.Hits {
		t.Errorf("real lru in step: %d cold starts, %d evictions, %d hits; alone %d, %d, %d",
			real.Baseline.ColdStarts, real.Baseline.Evictions, real.Baseline.Hits, lru.ColdStarts, lru.Evictions, lru.Hits)
	}
	if r := real.Policy; r.Requests != lru.Requests || r.Hits+r.ColdStarts+r.Refused != r.Requests || r.ColdMs <= 0 {
		t.Errorf("real %s in step: %+v", r.Policy, r)
	}
	if code, _, e := benchMain(t, "replay", "--trace", trace, "--models", zoo, "--against", "fifo", "--simulate"); code != 1 || !strings.Contains(e, "eviction policy") {
		t.Errorf("--against fifo: exit %d %q, want 1 naming the policy", code, e)
	}
}

// The generator is deterministic for a seed, and each shape has its
// shape: a heavy tail, bursts, a day cycle, timers.
func TestGenerateTraceShapes(t *testing.T) {
	models := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for _, shape := range bench.TraceShapes {
		o := bench.TraceOptions{Shape: shape, Models: models, Seed: 7}
		t1, err := bench.GenerateTrace(o)
		if err != nil {
			t.Fatal(err)
		}
		t2, _ := bench.GenerateTrace(o)
		o.Seed = 8
		t3, _ := bench.GenerateTrace(o)
		if !slices.Equal(t1, t2) || slices.Equal(t1, t3) || len(t1) < 100 {
			t.Fatalf("%s: %d requests; same seed equal %v, other seed equal %v", shape, len(t1), slices.Equal(t1, t2), slices.Equal(t1, t3))
		}
		if !slices.IsSortedFunc(t1, func(a, b bench.TraceRequest) int { return int(a.At - b.At) }) {
			t.Fatalf("%s: not in time order", shape)
		}
		count := map[string]int{}
		for _, r := range t1 {
			count[r.Model]++
		}
		top := 0
		for _, c := range count {
			top = max(top, c)
		}
		switch shape {
		case "heavy":
			if float64(top) < 0.25*float64(len(t1)) {
				t.Errorf("heavy: the top model has %d of %d requests", top, len(t1))
			}
		case "diurnal":
			// Day-peaking and night-peaking halves: the hours differ.
			if t1[len(t1)-1].At < 23*time.Hour {
				t.Errorf("diurnal: ends at %s, want a day", t1[len(t1)-1].At)
			}
		}
	}
	// A trace written and read back is the same trace.
	tr, _ := bench.GenerateTrace(bench.TraceOptions{Shape: "periodic", Models: models, Seed: 1, Duration: time.Hour})
	var buf bytes.Buffer
	if err := bench.WriteTrace(&buf, tr); err != nil {
		t.Fatal(err)
	}
	back, err := bench.ReadTrace(&buf)
	if err != nil || len(back) != len(tr) || back[10].Model != tr[10].Model || (back[10].At-tr[10].At).Abs() > time.Microsecond {
		t.Fatalf("read back: %d of %d, %v", len(back), len(tr), err)
	}
}

// BestFixedSet keeps the set of models worth most within the budget (a
// knapsack, not the densest first) and charges each kept model its first
// request only; a model that never missed counts its measured cost.
func TestBestFixedSet(t *testing.T) {
	const mib = 1 << 20
	res := bench.ReplayResult{PerModel: map[string]bench.ModelPaid{
		"a": {Requests: 10, ColdStarts: 5, ColdMs: 10}, // 2 ms a miss, 60 MiB
		"b": {Requests: 4, ColdStarts: 4, ColdMs: 40},  // 10 ms, 50 MiB
		"c": {Requests: 3},                             // never missed: 1 ms measured, 40 MiB
	}}
	costs := map[string]bench.Cost{
		"a": {Size: 60 * mib, Interpreter: time.Millisecond},
		"b": {Size: 49 * mib, Heap: mib},
		"c": {Size: 40 * mib, Interpreter: time.Millisecond},
	}
	// Within 100 MiB: {b, c} saves 3×10 + 2×1 = 32 ms of the 63 all pay;
	// {a, c} would save 20, {b} alone 30.
	ms, keep := bench.BestFixedSet(res, costs, 100*mib)
	if math.Abs(ms-31) > 1e-9 || !slices.Equal(keep, []string{"b", "c"}) {
		t.Fatalf("best fixed set %.2f ms keeping %v, want 31 keeping [b c]", ms, keep)
	}
	if ms, keep := bench.BestFixedSet(res, costs, 10*mib); ms != 63 || len(keep) != 0 {
		t.Fatalf("no room: %.2f ms keeping %v, want all 63 paid", ms, keep)
	}
}

// A model's steady invoke, for counting cold time, is the median of the
// run's own warm requests once there are enough of them; below that, the
// calibration's.
func TestRunSteady(t *testing.T) {
	calibrated := map[string]time.Duration{"busy": 150 * time.Millisecond, "rare": 20 * time.Millisecond, "never": time.Millisecond}
	warm := map[string][]float64{
		"busy": {260, 240, 250, 900, 245}, // a slow outlier does not move a median
		"rare": {35, 36},                  // two warm requests: too few
	}
	got := bench.RunSteadyForTest(calibrated, warm)
	want := map[string]float64{"busy": 250, "rare": 20, "never": 1}
	for id, w := range want {
		if math.Abs(got[id]-w) > 1e-9 {
			t.Errorf("%s: steady %v ms, want %v", id, got[id], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("steady for %d models, want %d: %v", len(got), len(want), got)
	}
}
