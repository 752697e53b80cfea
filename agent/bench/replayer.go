package bench

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

// replayThreads is the interpreter threads a replay's pool invokes on.
const replayThreads = 2

// replayer is one replay in progress: a pool, its virtual clock, and what
// it has paid so far. serve steps it one request at a time, so a replay
// can run alone (Replay) or in step with another (ReplayPair).
type replayer struct {
	o     ReplayOptions
	paths map[string]string
	pool  *tflite.Pool
	res   ReplayResult
	start time.Time // the trace's zero
	now   time.Time // the virtual clock
	next  time.Time // the next maintenance tick
	busy  time.Duration
	// resident is the page cache as the simulation sees it: a model is
	// resident from its load until its eviction.
	resident map[string]bool
	lastLoad map[string]tflite.LoadReport
	// background: models a background load warmed that no request has
	// used yet; evicted so, the load was wasted.
	background map[string]bool
	inputs     map[string][]byte
	held       float64 // bytes × seconds
	// slotFree is when the one load slot is free, in virtual time: a
	// prewarm holds it for its load time, so a cold request (or one for
	// the model being prewarmed) arriving meanwhile waits, and pays the
	// wait as cold time.
	slotFree time.Time
	// bgUntil is when the latest background load ends: a warm invoke
	// before then shares the cores with it.
	bgUntil    time.Time
	cores      int
	contention map[string]float64 // ms, per model
	readyAt    map[string]time.Time
	lat        []float64
	// Cold requests' latencies and warm ones', per model: cold time is
	// counted after the run, over the run's own steady invoke.
	coldLat, warmLat map[string][]float64
}

func newReplayer(ctx context.Context, o ReplayOptions) (*replayer, error) {
	began := time.Now()
	ids, paths, err := zooModels(o.Models)
	if err != nil {
		return nil, err
	}
	for _, r := range o.Trace {
		if _, ok := paths[r.Model]; !ok {
			return nil, fmt.Errorf("trace model %q is not in %s (ids are file names without .tflite)", r.Model, o.Models)
		}
	}
	if o.Costs == nil {
		if o.Costs, err = zooCosts(ctx, o.Models, 3, !o.KeepPageCache); err != nil {
			return nil, err
		}
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	policy, err := tflite.NewPolicy(o.Policy, tflite.PolicyOptions{})
	if err != nil {
		return nil, err
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &replayer{o: o, paths: paths, start: start, now: start, next: start.Add(o.Tick),
		res:      ReplayResult{Policy: policy.Name(), Budget: o.Budget, Simulated: o.Simulate, Requests: len(o.Trace), PerModel: map[string]ModelPaid{}},
		resident: map[string]bool{}, lastLoad: map[string]tflite.LoadReport{}, background: map[string]bool{},
		inputs: map[string][]byte{}, cores: o.Cores, contention: map[string]float64{}, readyAt: map[string]time.Time{},
		lat: make([]float64, 0, len(o.Trace)), coldLat: map[string][]float64{}, warmLat: map[string][]float64{}}
	if r.cores <= 0 {
		r.cores = 2
	}
	if o.Simulate {
		r.res.ReadRate = o.ReadRate
	}
	po := tflite.PoolOptions{Budget: o.Budget, Policy: policy, Now: func() time.Time { return r.now },
		Interpreter: tflite.Options{Threads: replayThreads},
		OnLoad:      func(e tflite.LoadEvent) { r.lastLoad[e.ModelID] = e.Report },
		OnEvict: func(e tflite.EvictEvent) {
			delete(r.resident, paths[e.ModelID])
			if r.background[e.ModelID] {
				r.res.BackgroundWasted++
				delete(r.background, e.ModelID)
			}
		}}
	if o.Simulate {
		sims := map[string]tflite.SimModel{}
		for id, c := range o.Costs {
			sims[paths[id]] = tflite.SimModel{Size: c.Size, Heap: c.Heap, Stages: c.Stages()}
		}
		r.pool = tflite.NewSimulatedPool(po, sims, func(path string) time.Duration {
			if o.ReadRate <= 0 || r.resident[path] {
				return 0
			}
			return time.Duration(float64(sims[path].Size) / o.ReadRate * float64(time.Second))
		})
	} else {
		r.pool = tflite.NewPool(po)
	}
	if err := r.register(ids); err != nil {
		r.close()
		return nil, err
	}
	r.busy = time.Since(began)
	return r, nil
}

// register registers the zoo's models with the pool and, for a real
// replay, reads their inputs and sets their page cache.
func (r *replayer) register(ids []string) error {
	for _, id := range ids {
		c, ok := r.o.Costs[id]
		if !ok {
			return fmt.Errorf("no measured cost for %s", id)
		}
		path := r.paths[id]
		if err := r.pool.Register(tflite.ModelSpec{ID: id, Path: path, KnownHeap: c.Heap, KnownSteady: c.Steady, KnownSaved: c.Stages().Saved()}); err != nil {
			return err
		}
		if r.o.Simulate {
			continue
		}
		var err error
		if r.inputs[id], err = inputFor(path); err != nil {
			return err
		}
		// Every replay starts from the same page cache: the kernel may
		// have split or dropped folios since the last.
		if _, err := cacheHuge(path, !r.o.KeepPageCache); err != nil {
			return err
		}
	}
	return nil
}

func (r *replayer) close() { _ = r.pool.Close() }

func (r *replayer) advance(to time.Time) {
	r.held += float64(r.pool.Stats().BytesInUse) * to.Sub(r.now).Seconds()
	r.now = to
}

// maintain runs the keep-alive and pre-warm maintenance at from.
func (r *replayer) maintain(ctx context.Context, from time.Time) error {
	r.pool.Expire()
	if r.slotFree.After(from) {
		return nil // a load holds the slot: a guess does not queue behind it
	}
	for _, id := range r.pool.DuePrewarms() {
		rep, loaded, err := r.pool.PrewarmDue(ctx, id)
		if err != nil {
			return fmt.Errorf("prewarm %s: %w", id, err)
		}
		if loaded {
			r.resident[r.paths[id]] = true
			cold := rep.Stages.Cold()
			r.slotFree = laterOf(r.slotFree, from).Add(cold)
			r.readyAt[id], r.bgUntil = r.slotFree, r.slotFree
			r.res.BackgroundLoads++
			r.res.BackgroundMs += msOf(cold)
			r.res.BackgroundCPUSeconds += loadCPU(rep.Stages, replayThreads)
			r.background[id] = true
		}
	}
	return nil
}

// serve moves the clock to the trace's request i (running every tick of
// maintenance on the way) and serves it.
func (r *replayer) serve(ctx context.Context, i int) error {
	began := time.Now()
	defer func() { r.busy += time.Since(began) }()
	if err := ctx.Err(); err != nil {
		return err
	}
	o, req := r.o, r.o.Trace[i]
	at := r.start.Add(req.At)
	for ; !r.next.After(at); r.next = r.next.Add(o.Tick) {
		r.advance(r.next)
		if err := r.maintain(ctx, r.now); err != nil {
			return err
		}
	}
	r.advance(at)
	if !o.Simulate {
		// The evictions' frees (milliseconds) had the gap before this
		// request (2 s on average in a generated trace; 50 ms at the
		// least inside a burst) to run in; the replay, running the
		// trace back to back, gives them that time here.
		r.pool.WaitFreed()
	}
	c := o.Costs[req.Model]
	t := time.Now()
	l, err := r.pool.Acquire(ctx, req.Model)
	if errors.Is(err, tflite.ErrOverBudget) {
		r.res.Refused++ // bigger than the budget: refused, as the agent would
		return nil
	}
	if err != nil {
		return fmt.Errorf("request at %s for %s: %w", req.At, req.Model, err)
	}
	acquire := time.Since(t)
	var latency, wait time.Duration
	if o.Simulate {
		latency = c.Steady
		if !l.Warm {
			st := r.lastLoad[req.Model]
			latency = st.Stages.Map + st.Stages.PageIn + st.Stages.Interpreter + st.Stages.Allocate + c.FirstInvoke
		}
	} else {
		if err := l.Interpreter().SetInput(0, r.inputs[req.Model]); err != nil {
			l.Release()
			return err
		}
		t = time.Now()
		err = l.Invoke()
		latency = acquire + time.Since(t)
		if err != nil {
			l.Release()
			return err
		}
	}
	switch {
	case !l.Warm:
		wait = max(r.slotFree.Sub(at), 0)
	case r.readyAt[req.Model].After(at):
		wait = r.readyAt[req.Model].Sub(at) // its prewarm is still loading
	}
	latency += wait
	if o.Simulate && l.Warm && wait == 0 && r.bgUntil.After(at) && replayThreads+1 > r.cores {
		// The invoke's threads and the load's one thread on cores:
		// the overlap runs (threads+1)/cores times slower.
		overlap := min(r.bgUntil.Sub(at), c.Steady)
		extra := time.Duration(float64(overlap) * (float64(replayThreads+1)/float64(r.cores) - 1))
		latency += extra
		r.contention[req.Model] += msOf(extra)
	}
	if !l.Warm {
		r.slotFree = at.Add(latency - c.Steady)
		r.res.LoadCPUSeconds += loadCPU(r.lastLoad[req.Model].Stages, replayThreads)
	}
	delete(r.readyAt, req.Model)
	delete(r.background, req.Model)
	paid := r.res.PerModel[req.Model]
	paid.Requests++
	if l.Warm && wait == 0 {
		r.res.Hits++
		r.warmLat[req.Model] = append(r.warmLat[req.Model], msOf(latency))
	} else {
		r.res.ColdStarts++
		paid.ColdStarts++
		r.coldLat[req.Model] = append(r.coldLat[req.Model], msOf(latency))
		r.resident[r.paths[req.Model]] = true
	}
	r.res.PerModel[req.Model] = paid
	l.Release()
	r.lat = append(r.lat, msOf(latency))
	// What a load pushed out may be wanted back: the agent runs its
	// keep-alive loop right after a request that loaded too, not only on
	// its tick; once the answer is out, so a request arriving before that
	// comes first and finds the pool as this one left it.
	done := at.Add(latency)
	if l.Warm || (i+1 < len(o.Trace) && r.start.Add(o.Trace[i+1].At).Before(done)) {
		return nil
	}
	return r.maintain(ctx, done)
}

// finish counts what the replay paid.
func (r *replayer) finish() ReplayResult {
	res := r.res
	calibrated := map[string]time.Duration{}
	for id := range res.PerModel {
		calibrated[id] = r.o.Costs[id].Steady
	}
	warmLat := r.warmLat
	if r.o.Simulate {
		warmLat = nil // a simulated warm request is the calibration
	}
	steady := runSteady(calibrated, warmLat)
	for _, id := range slices.Sorted(maps.Keys(res.PerModel)) { // one order: sums repeat exactly
		paid := res.PerModel[id]
		paid.SteadyMs = steady[id]
		for _, l := range r.coldLat[id] {
			paid.ColdMs += max(l-steady[id], 0)
		}
		paid.ColdMs += r.contention[id]
		res.ContentionMs += r.contention[id]
		res.ColdMs += paid.ColdMs
		res.PerModel[id] = paid
	}
	res.TotalLoadMs = res.ColdMs + res.BackgroundMs
	res.LoadCPUSeconds += res.BackgroundCPUSeconds
	watts := agent.DefaultConfig().Power.WattsPerCPUSecond
	res.BackgroundJoules, res.LoadJoules = res.BackgroundCPUSeconds*watts, res.LoadCPUSeconds*watts
	res.Evictions = r.pool.Stats().Evictions
	res.ByteSeconds = r.held
	res.BestFixedSetMs, res.BestFixedSetKeep = BestFixedSet(res, r.o.Costs, r.o.Budget)
	lat := slices.Clone(r.lat)
	sort.Float64s(lat)
	res.P50Ms, res.P95Ms, res.P99Ms = quantile(lat, .5), quantile(lat, .95), quantile(lat, .99)
	res.TraceSecs = r.now.Sub(r.start).Seconds()
	res.WallSecs = r.busy.Seconds()
	return res
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
