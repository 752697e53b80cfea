package tflite

import (
	"slices"
	"time"
)

// What the gate orders invokes by (invokeGate): a model's steady invoke
// once it was timed (or calibrated), before that its graph's work at the
// rate this device showed on the models it did time.

// minRateWork keeps tiny graphs out of the learned rate: their invokes are
// call overhead, not arithmetic (xor's 40 multiply-adds take a
// microsecond, 25 ns each; mobilenet_v2's 300 M about 0.07 ns each here).
const minRateWork = 1_000_000

// defaultNsPerWork stands in before any model was timed: a Cortex-A72's
// quantized convolutions, within a few times of most boards. Only the
// order among untimed models depends on it, and that not at all.
const defaultNsPerWork = 0.5

// invokeCostLocked is what e's next invoke is expected to take (called
// with the pool's mu held).
func (p *Pool) invokeCostLocked(e *entry) time.Duration {
	if s := e.costs.steadyOr(e.spec.KnownSteady); s > 0 {
		return s
	}
	return p.workRate.estimate(e.work)
}

// workRate is invoke time per unit of graph work: the median of the
// latest timed invokes of models large enough to say.
type workRate struct {
	v [costSamples]float64
	n int
}

func (r *workRate) observe(work int64, took time.Duration) {
	if work < minRateWork || took <= 0 {
		return
	}
	r.v[r.n%costSamples] = float64(took) / float64(work)
	r.n++
}

func (r *workRate) estimate(work int64) time.Duration {
	rate := defaultNsPerWork
	if k := min(r.n, costSamples); k > 0 {
		s := slices.Clone(r.v[:k])
		slices.Sort(s)
		rate = s[k/2]
	}
	return time.Duration(rate * float64(work))
}
