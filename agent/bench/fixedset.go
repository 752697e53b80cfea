package bench

// The best fixed warm set of a replayed trace: what the best fixed set of
// warm models pays at the replay's own cost per miss. A reference point,
// not a bound: it charges each model the replay's own (measured) cost per
// miss, and a policy that times its loads to the trace (timers, bursts,
// day cycles) pays less than any fixed set; the bench's heavy trace at
// 75 % had the default at 4.48× LRU against this set's 3.40×. (A true
// lower bound on cold time would be an offline optimum such as Belady's
// with sizes and costs, which this is not.)

import (
	"cmp"
	"math"
	"slices"
)

// BestFixedSet is the cold time (ms) the best fixed set of warm models
// would pay on res's requests, at res's cost per miss of each model, with
// the set restored for free after every request outside it: a kept model
// pays only its first request, every other model all of its requests. A
// model that never missed counts its measured cold cost. keep is the set,
// sorted. It is no bound on what a policy can reach (see the file
// comment).
func BestFixedSet(res ReplayResult, costs map[string]Cost, budget int64) (ms float64, keep []string) {
	type item struct {
		id      string
		weight  int     // MiB held warm, rounded up
		perMiss float64 // ms
		n       int
	}
	var items []item
	for id, pm := range res.PerModel {
		c := costs[id]
		perMiss := msOf(c.Stages().Saved())
		if pm.ColdStarts > 0 {
			perMiss = pm.ColdMs / float64(pm.ColdStarts)
		}
		items = append(items, item{id, int(math.Ceil(float64(c.Footprint()) / (1 << 20))), perMiss, pm.Requests})
	}
	// One order, so the sum repeats exactly from run to run.
	slices.SortFunc(items, func(a, b item) int { return cmp.Compare(a.id, b.id) })
	for _, it := range items {
		ms += float64(it.n) * it.perMiss
	}
	// 0/1 knapsack over MiB: keeping a model saves all but its first miss.
	capacity := int(budget >> 20)
	best := make([]float64, capacity+1)
	took := make([][]bool, len(items))
	for i, it := range items {
		took[i] = make([]bool, capacity+1)
		value := float64(max(it.n-1, 0)) * it.perMiss
		for b := capacity; b >= it.weight; b-- {
			if v := best[b-it.weight] + value; v > best[b] {
				best[b], took[i][b] = v, true
			}
		}
	}
	for i, b := len(items)-1, capacity; i >= 0; i-- {
		if took[i][b] {
			keep = append(keep, items[i].id)
			b -= items[i].weight
		}
	}
	slices.Sort(keep)
	return ms - best[capacity], keep
}
