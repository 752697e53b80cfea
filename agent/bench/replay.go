package bench

// Trace replay: a trace against one pool and one policy, on a virtual
// clock that jumps from request to request (stepping the keep-alive and
// pre-warm maintenance every tick between them). Loads and invokes are
// real, or with Simulate the measured costs stand in for them.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/tflite"
)

// ReplayOptions configure one replay.
type ReplayOptions struct {
	Trace  []TraceRequest
	Models string // the zoo folder: ids are file names without .tflite
	Budget int64
	Policy string
	// Simulate replays with the measured costs, without the runtime.
	Simulate bool
	// ReadRate (bytes/s), when > 0, is the storage a cold model is read
	// from: a model's first load and every load after its eviction pay
	// its file size at this rate (the page cache is assumed to drop an
	// evicted model, as on a board short of memory). Simulate only.
	ReadRate float64
	// Tick is how often the keep-alive and pre-warm maintenance runs
	// (virtual time); 0 means 1 s, as the agent's loop.
	Tick time.Duration
	// Costs are the zoo's measured costs (zooCosts); nil measures them.
	Costs map[string]Cost
	// Cores is the simulated board's CPU cores (0 means 2): a background
	// load occupies one of them, and a warm request invoking meanwhile on
	// the interpreter's threads shares them (see ContentionMs). Simulate
	// only.
	Cores int
	// KeepPageCache leaves the zoo's page cache as it is. Otherwise a
	// real replay first has it hold each model in 2 MiB folios, as the
	// agent does (huge_pages), so every replay starts from the same state.
	KeepPageCache bool
}

// ReplayResult is what a replay paid. Latencies are per request: the
// acquire (a load when cold) plus the invoke; no queueing (requests are
// served one at a time).
type ReplayResult struct {
	Policy     string  `json:"policy"`
	Budget     int64   `json:"budget"`
	Simulated  bool    `json:"simulated"`
	ReadRate   float64 `json:"read_rate,omitempty"`
	Requests   int     `json:"requests"`
	Hits       int     `json:"hits"`
	Refused    int     `json:"refused"` // the model alone exceeds the budget
	ColdStarts int     `json:"cold_starts"`
	// ColdMs is the cold time requests paid: a cold request's latency
	// over its model's steady invoke (per_model's steady_ms).
	ColdMs float64 `json:"cold_ms"`
	// ContentionMs (simulated only; part of cold_ms) is what warm requests
	// lost sharing the CPU with a background load running at the time.
	ContentionMs float64 `json:"contention_ms"`
	Evictions    uint64  `json:"evictions"`
	// BackgroundLoads are the loads the policy made on its own (pre-warm
	// windows, rewarms of what a load pushed out), BackgroundMs what they
	// took, off the requests' path; BackgroundWasted of them were evicted
	// again before any request for their model came.
	BackgroundLoads  int     `json:"background_loads"`
	BackgroundMs     float64 `json:"background_ms"`
	BackgroundWasted int     `json:"background_wasted"`
	// TotalLoadMs is all the loading the policy paid for: the requests'
	// cold time and the background loads (cold_ms + background_ms). A
	// policy that trades one for the other shows here.
	TotalLoadMs float64 `json:"total_load_ms"`
	// CPU time and energy the loads cost (see loadCPU), by the agent's
	// default power model (power.watts_per_cpu_second): the background
	// loads, and all loads (the requests' too).
	BackgroundCPUSeconds float64 `json:"background_cpu_seconds"`
	BackgroundJoules     float64 `json:"background_joules"`
	LoadCPUSeconds       float64 `json:"load_cpu_seconds"`
	LoadJoules           float64 `json:"load_joules"`
	ByteSeconds          float64 `json:"byte_seconds"` // bytes held × virtual seconds
	P50Ms                float64 `json:"p50_ms"`
	P95Ms                float64 `json:"p95_ms"`
	P99Ms                float64 `json:"p99_ms"`
	TraceSecs            float64 `json:"trace_seconds"`
	WallSecs             float64 `json:"wall_seconds"`
	// PerModel says which models paid the cold time.
	PerModel map[string]ModelPaid `json:"per_model"`
	// BestFixedSetMs is what the best fixed warm set pays at this
	// replay's cost per miss (see BestFixedSet): a reference, not a bound.
	BestFixedSetMs   float64  `json:"best_fixed_set_ms"`
	BestFixedSetKeep []string `json:"best_fixed_set_keep"`
}

// ModelPaid is one model's share of a replay.
type ModelPaid struct {
	Requests   int     `json:"requests"`
	ColdStarts int     `json:"cold_starts"`
	ColdMs     float64 `json:"cold_ms"`
	// SteadyMs is the steady invoke its cold time is counted over: in a
	// real replay the median of this run's warm requests (see runSteady).
	SteadyMs float64 `json:"steady_ms"`
}

// minSteadySamples: a model with fewer warm requests in a real replay is
// counted over its calibrated steady invoke instead.
const minSteadySamples = 3

// runSteady is each model's steady invoke for counting cold time: the
// median latency of its warm requests in this run, or with fewer than
// minSteadySamples of them its calibrated figure. Calibration ran at
// another time, under another load: a compute-bound model's steady invoke
// drifts between runs by more than a small model's whole cold start
// (deeplab's measured 151 ms one day and 242 ms the day before), and
// every cold request would carry that drift as cold time, or hide its
// real cost under the clamp at zero. The run's own warm requests saw the
// same machine as its cold ones.
func runSteady(calibrated map[string]time.Duration, warm map[string][]float64) map[string]float64 {
	out := map[string]float64{}
	for id, c := range calibrated {
		out[id] = msOf(c)
		if w := warm[id]; len(w) >= minSteadySamples {
			out[id] = quantile(w, .5)
		}
	}
	return out
}

// Replay runs one trace against one policy.
func Replay(ctx context.Context, o ReplayOptions) (ReplayResult, error) {
	wall := time.Now()
	ids, paths, err := zooModels(o.Models)
	if err != nil {
		return ReplayResult{}, err
	}
	for _, r := range o.Trace {
		if _, ok := paths[r.Model]; !ok {
			return ReplayResult{}, fmt.Errorf("trace model %q is not in %s (ids are file names without .tflite)", r.Model, o.Models)
		}
	}
	if o.Costs == nil {
		if o.Costs, err = zooCosts(ctx, o.Models, 3, !o.KeepPageCache); err != nil {
			return ReplayResult{}, err
		}
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	policy, err := tflite.NewPolicy(o.Policy, tflite.PolicyOptions{})
	if err != nil {
		return ReplayResult{}, err
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	res := ReplayResult{Policy: policy.Name(), Budget: o.Budget, Simulated: o.Simulate, Requests: len(o.Trace), PerModel: map[string]ModelPaid{}}
	if o.Simulate {
		res.ReadRate = o.ReadRate
	}
	// The page cache as the simulation sees it: a model is resident from
	// its load until its eviction.
	resident := map[string]bool{}
	lastLoad := map[string]tflite.LoadReport{}
	// background: models a background load warmed that no request has
	// used yet; evicted so, the load was wasted.
	background := map[string]bool{}
	const threads = 2
	po := tflite.PoolOptions{Budget: o.Budget, Policy: policy, Now: func() time.Time { return now },
		Interpreter: tflite.Options{Threads: threads},
		OnLoad:      func(e tflite.LoadEvent) { lastLoad[e.ModelID] = e.Report },
		OnEvict: func(e tflite.EvictEvent) {
			delete(resident, paths[e.ModelID])
			if background[e.ModelID] {
				res.BackgroundWasted++
				delete(background, e.ModelID)
			}
		}}
	var pool *tflite.Pool
	if o.Simulate {
		sims := map[string]tflite.SimModel{}
		for id, c := range o.Costs {
			sims[paths[id]] = tflite.SimModel{Size: c.Size, Heap: c.Heap, Stages: c.Stages()}
		}
		pool = tflite.NewSimulatedPool(po, sims, func(path string) time.Duration {
			if o.ReadRate <= 0 || resident[path] {
				return 0
			}
			return time.Duration(float64(sims[path].Size) / o.ReadRate * float64(time.Second))
		})
	} else {
		pool = tflite.NewPool(po)
	}
	defer func() { _ = pool.Close() }()
	inputs := map[string][]byte{}
	for _, id := range ids {
		c, ok := o.Costs[id]
		if !ok {
			return res, fmt.Errorf("no measured cost for %s", id)
		}
		if err := pool.Register(tflite.ModelSpec{ID: id, Path: paths[id], KnownHeap: c.Heap, KnownSteady: c.Steady, KnownSaved: c.Stages().Saved()}); err != nil {
			return res, err
		}
		if !o.Simulate {
			if inputs[id], err = inputFor(paths[id]); err != nil {
				return res, err
			}
			// Every replay starts from the same page cache: the kernel
			// may have split or dropped folios since the last.
			if _, err := cacheHuge(paths[id], !o.KeepPageCache); err != nil {
				return res, err
			}
		}
	}

	var held float64 // bytes × seconds
	advance := func(to time.Time) {
		held += float64(pool.Stats().BytesInUse) * to.Sub(now).Seconds()
		now = to
	}
	// The one load slot, in virtual time: a prewarm holds it for its load
	// time, so a cold request (or one for the model being prewarmed)
	// arriving meanwhile waits, and pays the wait as cold time.
	var slotFree time.Time
	// bgUntil is when the latest background load ends: a warm invoke
	// before then shares the cores with it.
	var bgUntil time.Time
	cores := o.Cores
	if cores <= 0 {
		cores = 2
	}
	contention := map[string]float64{} // ms, per model
	readyAt := map[string]time.Time{}
	maintain := func(from time.Time) error {
		pool.Expire()
		if slotFree.After(from) {
			return nil // a load holds the slot: a guess does not queue behind it
		}
		for _, id := range pool.DuePrewarms() {
			rep, loaded, err := pool.PrewarmDue(ctx, id)
			if err != nil {
				return fmt.Errorf("prewarm %s: %w", id, err)
			}
			if loaded {
				resident[paths[id]] = true
				cold := rep.Stages.Cold()
				slotFree = laterOf(slotFree, from).Add(cold)
				readyAt[id], bgUntil = slotFree, slotFree
				res.BackgroundLoads++
				res.BackgroundMs += msOf(cold)
				res.BackgroundCPUSeconds += loadCPU(rep.Stages, threads)
				background[id] = true
			}
		}
		return nil
	}
	lat := make([]float64, 0, len(o.Trace))
	// Cold requests' latencies and warm ones', per model: cold time is
	// counted after the run, over the run's own steady invoke.
	coldLat, warmLat := map[string][]float64{}, map[string][]float64{}
	next := start.Add(o.Tick)
	for i, r := range o.Trace {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		at := start.Add(r.At)
		for ; !next.After(at); next = next.Add(o.Tick) {
			advance(next)
			if err := maintain(now); err != nil {
				return res, err
			}
		}
		advance(at)
		if !o.Simulate {
			// The evictions' frees (milliseconds) had the gap before this
			// request (2 s on average in a generated trace; 50 ms at the
			// least inside a burst) to run in; the replay, running the
			// trace back to back, gives them that time here.
			pool.WaitFreed()
		}
		c := o.Costs[r.Model]
		t := time.Now()
		l, err := pool.Acquire(ctx, r.Model)
		if errors.Is(err, tflite.ErrOverBudget) {
			res.Refused++ // bigger than the budget: refused, as the agent would
			continue
		}
		if err != nil {
			return res, fmt.Errorf("request at %s for %s: %w", r.At, r.Model, err)
		}
		acquire := time.Since(t)
		var latency, wait time.Duration
		if o.Simulate {
			latency = c.Steady
			if !l.Warm {
				st := lastLoad[r.Model]
				latency = st.Stages.Map + st.Stages.PageIn + st.Stages.Interpreter + st.Stages.Allocate + c.FirstInvoke
			}
		} else {
			if err := l.Interpreter().SetInput(0, inputs[r.Model]); err != nil {
				l.Release()
				return res, err
			}
			t = time.Now()
			err = l.Invoke()
			latency = acquire + time.Since(t)
			if err != nil {
				l.Release()
				return res, err
			}
		}
		switch {
		case !l.Warm:
			wait = max(slotFree.Sub(at), 0)
		case readyAt[r.Model].After(at):
			wait = readyAt[r.Model].Sub(at) // its prewarm is still loading
		}
		latency += wait
		if o.Simulate && l.Warm && wait == 0 && bgUntil.After(at) && threads+1 > cores {
			// The invoke's threads and the load's one thread on cores:
			// the overlap runs (threads+1)/cores times slower.
			overlap := min(bgUntil.Sub(at), c.Steady)
			extra := time.Duration(float64(overlap) * (float64(threads+1)/float64(cores) - 1))
			latency += extra
			contention[r.Model] += msOf(extra)
		}
		if !l.Warm {
			slotFree = at.Add(latency - c.Steady)
		}
		delete(readyAt, r.Model)
		delete(background, r.Model)
		if !l.Warm {
			res.LoadCPUSeconds += loadCPU(lastLoad[r.Model].Stages, threads)
		}
		paid := res.PerModel[r.Model]
		paid.Requests++
		if l.Warm && wait == 0 {
			res.Hits++
			warmLat[r.Model] = append(warmLat[r.Model], msOf(latency))
		} else {
			res.ColdStarts++
			paid.ColdStarts++
			coldLat[r.Model] = append(coldLat[r.Model], msOf(latency))
			resident[paths[r.Model]] = true
		}
		res.PerModel[r.Model] = paid
		l.Release()
		lat = append(lat, msOf(latency))
		// What a load pushed out may be wanted back: the agent runs its
		// keep-alive loop right after a request that loaded too, not only
		// on its tick; once the answer is out, so a request arriving
		// before that comes first and finds the pool as this one left it.
		done := at.Add(latency)
		if l.Warm || (i+1 < len(o.Trace) && start.Add(o.Trace[i+1].At).Before(done)) {
			continue
		}
		if err := maintain(done); err != nil {
			return res, err
		}
	}
	calibrated := map[string]time.Duration{}
	for id := range res.PerModel {
		calibrated[id] = o.Costs[id].Steady
	}
	if o.Simulate {
		warmLat = nil // a simulated warm request is the calibration
	}
	steady := runSteady(calibrated, warmLat)
	for _, id := range slices.Sorted(maps.Keys(res.PerModel)) { // one order: sums repeat exactly
		paid := res.PerModel[id]
		paid.SteadyMs = steady[id]
		for _, l := range coldLat[id] {
			paid.ColdMs += max(l-steady[id], 0)
		}
		paid.ColdMs += contention[id]
		res.ContentionMs += contention[id]
		res.ColdMs += paid.ColdMs
		res.PerModel[id] = paid
	}
	res.TotalLoadMs = res.ColdMs + res.BackgroundMs
	res.LoadCPUSeconds += res.BackgroundCPUSeconds
	watts := agent.DefaultConfig().Power.WattsPerCPUSecond
	res.BackgroundJoules, res.LoadJoules = res.BackgroundCPUSeconds*watts, res.LoadCPUSeconds*watts
	s := pool.Stats()
	res.Evictions = s.Evictions
	res.ByteSeconds = held
	res.BestFixedSetMs, res.BestFixedSetKeep = BestFixedSet(res, o.Costs, o.Budget)
	sort.Float64s(lat)
	res.P50Ms, res.P95Ms, res.P99Ms = quantile(lat, .5), quantile(lat, .95), quantile(lat, .99)
	res.TraceSecs = now.Sub(start).Seconds()
	res.WallSecs = time.Since(wall).Seconds()
	return res, nil
}

// loadCPU is the CPU time a load's stages take: the map, page-in,
// interpreter and allocation on one core, the first invoke on threads
// (the agent's power model counts a warm-up the same way, plan.go).
func loadCPU(s tflite.Stages, threads int) float64 {
	return (s.Map + s.PageIn + s.Interpreter + s.Allocate).Seconds() + s.FirstInvoke.Seconds()*float64(threads)
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
