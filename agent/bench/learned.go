package bench

import (
	"cmp"
	"slices"
	"time"
)

// learnedCosts are costs a simulator replays once real runs have shown
// what a miss costs: each model's cold time per cold start over runs (the
// misses requests paid, waits behind other loads included) in place of
// its isolated load. A model the runs never found cold keeps its measured
// cost. Real misses under churn cost more than an isolated load (in the
// simulator check about 1.5× the median measured one), so a simulator on
// isolated costs made the same decisions and under-counted every one.
func learnedCosts(costs map[string]Cost, runs ...ReplayResult) map[string]Cost {
	coldMs, starts := map[string]float64{}, map[string]int{}
	for _, r := range runs {
		for id, p := range r.PerModel {
			coldMs[id] += p.ColdMs
			starts[id] += p.ColdStarts
		}
	}
	out := make(map[string]Cost, len(costs))
	for id, c := range costs {
		if n := starts[id]; n > 0 {
			perMiss := time.Duration(coldMs[id] / float64(n) * float64(time.Millisecond))
			// A miss is counted as its latency over the steady invoke: the
			// first invoke carries the difference to the isolated load.
			c.FirstInvoke = max(c.FirstInvoke+perMiss-(c.Cold()-c.Steady), 0)
		}
		out[id] = c
	}
	return out
}

// medianRuns is each policy's run of median cold time among runs[from:]
// (with from 1: the runs a simulation on costs learned from the first
// did not see). runs keeps its order.
func medianRuns(runs map[string][]ReplayResult, from int) map[string]ReplayResult {
	out := map[string]ReplayResult{}
	for pol, rs := range runs {
		if len(rs) <= from {
			continue
		}
		rest := slices.Clone(rs[from:])
		slices.SortFunc(rest, func(a, b ReplayResult) int { return cmp.Compare(a.ColdMs, b.ColdMs) })
		out[pol] = rest[len(rest)/2]
	}
	return out
}
