package tflite

// What a model's cold start costs, learned from its own misses. The
// policies rank models by it, so it must be the cost requests really pay.
// Calibration measures it once, on a quiet machine with hot CPU caches,
// and its first-invoke penalty is the difference of two single invokes:
// seven measurements of one zoo put a model's figure anywhere in a 2–3×
// range, and under churn the small models' misses cost 1.5–3× their
// calibrated figure (their kernels' code and data are no longer cached).
// The pool therefore times the misses it serves and ranks by the median
// of the latest ones, the calibrated figure counting as one of them.

import (
	"slices"
	"time"
)

// costSamples is how many recent misses (and warm invokes) a model's
// estimate is the median of: enough that one outlier (a miss that shared
// the cores with a free) moves nothing, few enough to follow a change.
const costSamples = 7

// durations keeps the latest costSamples durations.
type durations struct {
	v [costSamples]time.Duration
	n int // ever added
}

func (r *durations) add(d time.Duration) {
	r.v[r.n%costSamples] = d
	r.n++
}

// samples are the kept durations, oldest first.
func (r *durations) samples() []time.Duration {
	k := min(r.n, costSamples)
	out := make([]time.Duration, 0, k)
	for i := r.n - k; i < r.n; i++ {
		out = append(out, r.v[i%costSamples])
	}
	return out
}

// median is the median of the kept durations and prior (when > 0); ok is
// false when there is neither.
func (r *durations) median(prior time.Duration) (m time.Duration, ok bool) {
	var buf [costSamples + 1]time.Duration
	s := append(buf[:0], r.v[:min(r.n, costSamples)]...)
	if prior > 0 {
		s = append(s, prior)
	}
	if len(s) == 0 {
		return 0, false
	}
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2], true
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
}

// coldCost is one model's cold cost as the pool learns it.
type coldCost struct {
	steady durations // the latest warm invokes
	saved  durations // what the latest misses cost over a warm request
	// extra is the storage read the latest load expects beyond the page-in
	// it measured (storageExtra): on a board the page cache drops the model.
	extra time.Duration
}

// steadyOr is the model's steady invoke: the median of its latest warm
// invokes, or known (calibration) before there is one.
func (c *coldCost) steadyOr(known time.Duration) time.Duration {
	if m, ok := c.steady.median(0); ok {
		return m
	}
	return known
}

// observe notes a miss: its load stages (Map … Allocate) and its first
// invoke, whose penalty over a steady one is counted.
func (c *coldCost) observe(load Stages, first, knownSteady time.Duration) {
	load.FirstInvoke, load.Steady = first, c.steadyOr(knownSteady)
	c.saved.add(load.Saved())
}

// estimate is what the next cold start is expected to cost: the median of
// the latest misses with prior (calibration) as one of them, or fallback
// (the latest load's own stages) before either.
func (c *coldCost) estimate(prior, fallback time.Duration) time.Duration {
	m, ok := c.saved.median(prior)
	if !ok {
		m = fallback
	}
	return m + c.extra
}

// simulatedInvoker is an instance whose invokes take simulated time (the
// simulated runtime's): the pool learns from that rather than its clock.
type simulatedInvoker interface {
	invokeTime() time.Duration
}

// invokeTime is how long an invoke of it took: measured, or simulated.
func invokeTime(it instance, measured time.Duration) time.Duration {
	if s, ok := it.(simulatedInvoker); ok {
		return s.invokeTime()
	}
	return measured
}
