// Package calibrate measures how a model runs on this board: staged loads
// and steady invokes per candidate thread count, their medians, footprint
// and CPU cost, within a reservation of the pool's budget.
package calibrate

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// Calibration tunes how a model is run on this board, once per validity key.
type Calibration struct {
	Runs       int // staged loads the medians are over
	Steady     int // steady invokes per thread count
	MaxThreads int // auto-tune tries 1..MaxThreads (capped at the cores)
	PageIn     bool
	// Budget, when set, is where each measuring load takes its memory and
	// the load slot from, so calibration counts against the pool's budget
	// and never runs beside a request's load.
	Budget Reserver
	// HeapGuess is the heap reserved for the first load, before this
	// calibration measured one (the pool's measurement, when it has one).
	HeapGuess int64
	// Yield, when set, runs before every measuring load: it waits while
	// requests are served, so they preempt calibration between runs.
	Yield func(context.Context) error
	// CPU adds up the process CPU time of the measuring loads and invokes
	// (not the waits between them, when the process may do other work).
	CPU time.Duration
}

// Reserver is the pool as calibration uses it.
type Reserver interface {
	Reserve(ctx context.Context, bytes int64) (*tflite.Reservation, error)
}

// threadCandidates are the thread counts to try: the configured one, or
// 1..min(cores, MaxThreads) when threads is 0 (auto).
func (c Calibration) threadCandidates(threads int) []int {
	if threads > 0 {
		return []int{threads}
	}
	n := min(runtime.NumCPU(), max(c.MaxThreads, 1))
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

// Run measures the model at path: steady latency per candidate thread count,
// then per-stage medians and the footprint at the best one.
func (c *Calibration) Run(ctx context.Context, path string, threads int, delegates []tflite.DelegateSpec) (storage.Calibration, error) {
	var cal storage.Calibration
	best, bestSteady := 0, SteadyTimes{Wall: time.Duration(math.MaxInt64)}
	var runs []tflite.LoadReport
	for _, t := range c.threadCandidates(threads) {
		rep, steady, err := c.Measure(ctx, path, tflite.Options{Threads: t, Delegates: delegates})
		if err != nil {
			return cal, fmt.Errorf("calibrate %d threads: %w", t, err)
		}
		cal.Tried = append(cal.Tried, storage.ThreadResult{Threads: t, SteadyMs: ms(steady.Wall)})
		if steady.Wall < bestSteady.Wall {
			best, bestSteady, runs = t, steady, []tflite.LoadReport{rep}
		}
	}
	cpus := []time.Duration{bestSteady.CPU}
	for len(runs) < max(c.Runs, 1) {
		rep, steady, err := c.Measure(ctx, path, tflite.Options{Threads: best, Delegates: delegates})
		if err != nil {
			return cal, fmt.Errorf("calibrate: %w", err)
		}
		runs = append(runs, rep)
		cpus = append(cpus, steady.CPU)
	}
	st := medianStages(runs)
	st.Steady = bestSteady.Wall
	cal.SteadyCPU = median(cpus)
	cal.Threads = best
	cal.Stages = storage.Stages(st)
	cal.Runs = len(runs)
	if st.Steady > 0 {
		cal.FirstInvokePenalty = math.Round(float64(st.FirstInvoke)/float64(st.Steady)*100) / 100
	}
	heaps := make([]int64, len(runs))
	for i, r := range runs {
		heaps[i] = r.Footprint.Heap
	}
	// The largest observed heap: admission should not undercount.
	cal.HeapBytes = slices.Max(heaps)
	cal.MappedBytes = runs[0].Footprint.Mapped
	cal.Spread = coldSpread(runs)
	return cal, nil
}

// coldSpread is the relative spread of the runs' cold starts,
// (max-min)/median: how much a twin should trust the medians.
func coldSpread(runs []tflite.LoadReport) float64 {
	cold := make([]time.Duration, len(runs))
	for i, r := range runs {
		s := r.Stages
		cold[i] = s.Map + s.PageIn + s.Interpreter + s.Allocate + s.FirstInvoke
	}
	m := median(cold)
	if m <= 0 {
		return 0
	}
	return math.Round(float64(slices.Max(cold)-slices.Min(cold))/float64(m)*100) / 100
}

// SteadyTimes is what one steady invoke takes: the median wall time and
// the process's CPU time per invoke; Contention is how long the process's
// threads waited for a CPU meanwhile, over the wall time (0: the cores
// were ours; above ~0.1 other work slowed the invokes, and the runtime's
// spinning workers burn CPU time while they wait for each other).
type SteadyTimes struct {
	Wall, CPU  time.Duration
	Contention float64
}

// Measure is one staged load plus several steady invokes, within a
// reservation of the budget when there is one.
func (c *Calibration) Measure(ctx context.Context, path string, o tflite.Options) (tflite.LoadReport, SteadyTimes, error) {
	if c.Yield != nil {
		if err := c.Yield(ctx); err != nil {
			return tflite.LoadReport{}, SteadyTimes{}, err
		}
	}
	var r *tflite.Reservation
	if c.Budget != nil {
		size := int64(0)
		if fi, err := os.Stat(path); err == nil {
			size = fi.Size()
		}
		// Never measured: reserve the file's size again for the heap (the
		// shared models hold 0.1–6× their size); the measurement corrects it.
		var err error
		if r, err = c.Budget.Reserve(ctx, size+max(c.HeapGuess, size)); err != nil {
			return tflite.LoadReport{}, SteadyTimes{}, err
		}
		defer r.Release()
	}
	cpu0 := processCPU()
	defer func() { c.CPU += processCPU() - cpu0 }()
	m, it, rep, err := tflite.LoadStaged(path, tflite.LoadOptions{Interpreter: o, PageIn: c.PageIn, Warm: tflite.WarmOptions{SkipSteady: true}})
	if err != nil {
		return rep, SteadyTimes{}, err
	}
	if r != nil {
		r.Grow(rep.Footprint.Total())
	}
	// Later loads of this calibration reserve what this one measured.
	c.HeapGuess = max(c.HeapGuess, rep.Footprint.Heap)
	defer func() { _ = m.Close() }()
	defer it.Close()
	n := max(c.Steady, 1)
	times := make([]time.Duration, n)
	cpu, delay, wall := processCPU(), runDelay(), time.Now()
	for i := range times {
		t := time.Now()
		if err := it.Invoke(); err != nil {
			return rep, SteadyTimes{}, err
		}
		times[i] = time.Since(t)
	}
	st := SteadyTimes{Wall: median(times), CPU: (processCPU() - cpu) / time.Duration(n)}
	if w := time.Since(wall); w > 0 {
		st.Contention = float64(runDelay()-delay) / float64(w)
	}
	return rep, st, nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianStages(runs []tflite.LoadReport) tflite.Stages {
	pick := func(f func(tflite.Stages) time.Duration) time.Duration {
		d := make([]time.Duration, len(runs))
		for i, r := range runs {
			d[i] = f(r.Stages)
		}
		return median(d)
	}
	return tflite.Stages{
		Map:         pick(func(s tflite.Stages) time.Duration { return s.Map }),
		PageIn:      pick(func(s tflite.Stages) time.Duration { return s.PageIn }),
		Interpreter: pick(func(s tflite.Stages) time.Duration { return s.Interpreter }),
		Allocate:    pick(func(s tflite.Stages) time.Duration { return s.Allocate }),
		FirstInvoke: pick(func(s tflite.Stages) time.Duration { return s.FirstInvoke }),
	}
}

// ms is a duration in milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
