package bench

// Trace replay: a trace against one pool and one policy, on a virtual
// clock that jumps from request to request (stepping the keep-alive and
// pre-warm maintenance every tick between them). Loads and invokes are
// real, or with Simulate the measured costs stand in for them. Two
// policies can replay one trace in step (ReplayPair); the stepping engine
// is replayer.go.

import (
	"context"
	"fmt"
	"math"
	"time"
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

// Replay runs one trace against one policy.
func Replay(ctx context.Context, o ReplayOptions) (ReplayResult, error) {
	r, err := newReplayer(ctx, o)
	if err != nil {
		return ReplayResult{}, err
	}
	defer r.close()
	for i := range o.Trace {
		if err := r.serve(ctx, i); err != nil {
			return r.res, err
		}
	}
	return r.finish(), nil
}

// ReplayPair replays one trace against two policies in one run, request
// by request: each request is served by the one pool, then by the other,
// the order alternating from request to request, and every pool's frees
// have run before either serves. Two replays run one after the other see
// different minutes of the machine (on this 2-core VM the same decisions
// cost 18.8 s of cold time in one run and 25.7 s in the next); in step,
// a slow minute falls on both, and their ratio is the policies'. Each
// pool has its own budget and clock; they share the page cache and the
// cores, one at a time. Costs are measured once, for both. The policy is
// o.Policy, the baseline the other.
func ReplayPair(ctx context.Context, o ReplayOptions, baseline string) (PairResult, error) {
	if o.Costs == nil {
		var err error
		if o.Costs, err = zooCosts(ctx, o.Models, 3, !o.KeepPageCache); err != nil {
			return PairResult{}, err
		}
	}
	var rs [2]*replayer
	for k, pol := range [2]string{baseline, o.Policy} {
		po := o
		po.Policy = pol
		r, err := newReplayer(ctx, po)
		if err != nil {
			return PairResult{}, fmt.Errorf("%s: %w", pol, err)
		}
		defer r.close()
		rs[k] = r
	}
	for i := range o.Trace {
		for j := range 2 {
			r := rs[(i+j)%2]
			if !o.Simulate {
				// The other pool's frees must not run beside this request.
				rs[(i+j+1)%2].pool.WaitFreed()
			}
			if err := r.serve(ctx, i); err != nil {
				return PairResult{}, fmt.Errorf("%s: %w", r.res.Policy, err)
			}
		}
	}
	b, p := rs[0].finish(), rs[1].finish()
	ratio := func(x, y float64) float64 { return x / math.Max(y, 1e-9) }
	return PairResult{Baseline: b, Policy: p, ColdRatio: ratio(b.ColdMs, p.ColdMs),
		TotalLoadRatio: ratio(b.TotalLoadMs, p.TotalLoadMs), P99Ratio: ratio(b.P99Ms, p.P99Ms)}, nil
}

// PairResult is a ReplayPair (`replay --against`'s JSON): the two replays
// of one run and the baseline's figures ÷ the policy's (above 1: the
// policy spends less).
type PairResult struct {
	Baseline       ReplayResult `json:"baseline"`
	Policy         ReplayResult `json:"policy"`
	ColdRatio      float64      `json:"cold_ratio"`
	TotalLoadRatio float64      `json:"total_load_ratio"`
	P99Ratio       float64      `json:"p99_ratio"`
}
