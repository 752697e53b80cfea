package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/tflite"
)

// Learned costs carry what the runs' misses cost: a model found cold is
// simulated at its cold time per cold start over all the runs given (over
// its steady invoke, as a real miss is counted), one never found cold
// keeps its measured load, and no stage goes negative.
func TestLearnedCostsAreTheRunsMisses(t *testing.T) {
	ms := time.Millisecond
	costs := map[string]Cost{
		"a": {Size: 1, Map: 1 * ms, Interpreter: 2 * ms, Allocate: 1 * ms, FirstInvoke: 10 * ms, Steady: 8 * ms}, // 6 ms over steady
		"b": {Size: 1, Map: 1 * ms, FirstInvoke: 5 * ms, Steady: 4 * ms},
		"c": {Size: 1, Map: 6 * ms, FirstInvoke: 4 * ms, Steady: 4 * ms}, // 6 ms over steady, 6 of them the map
	}
	runs := []ReplayResult{
		{PerModel: map[string]ModelPaid{"a": {ColdStarts: 2, ColdMs: 20}, "c": {ColdStarts: 1, ColdMs: 1}}},
		{PerModel: map[string]ModelPaid{"a": {ColdStarts: 2, ColdMs: 16}, "b": {ColdStarts: 0}}},
	}
	got := learnedCosts(costs, runs...)
	if d := got["a"].Cold() - got["a"].Steady; d != 9*ms { // (20+16) / 4
		t.Errorf("a: %v over steady, want 9ms (the runs' cold time per cold start)", d)
	}
	if got["b"] != costs["b"] {
		t.Errorf("b, never cold: %+v, want its measured cost", got["b"])
	}
	if c := got["c"]; c.FirstInvoke != 0 || c.Map != 6*ms {
		t.Errorf("c, whose misses cost less than its map: %+v, want the first invoke clamped at 0", c)
	}
	if costs["a"].FirstInvoke != 10*ms {
		t.Error("learnedCosts changed the measured costs it was given")
	}
}

// The held-out runs are those after the ones learned from, and each
// policy's is its run of median cold time among them.
func TestHeldOutIsTheMedianOfTheOtherRuns(t *testing.T) {
	runs := map[string][]ReplayResult{
		"lru":  {{ColdMs: 1}, {ColdMs: 50}, {ColdMs: 30}, {ColdMs: 40}},
		"only": {{ColdMs: 7}},
	}
	h := medianRuns(runs, 1)
	if h["lru"].ColdMs != 40 {
		t.Errorf("lru held out: %v, want the median of 50, 30, 40", h["lru"].ColdMs)
	}
	if _, ok := h["only"]; ok {
		t.Error("a policy with no run left to hold out has a held-out run")
	}
	if runs["lru"][1].ColdMs != 50 {
		t.Error("medianRuns reordered the runs")
	}
}

// The policies section shows the learned-costs check when it ran, with
// both policies' errors against the held-out runs.
func TestPoliciesSectionShowsTheLearnedCheck(t *testing.T) {
	v := Validation{Shape: "heavy", Share: .5, RealRatios: []float64{2, 2, 2},
		HeldOut:    map[string]ReplayResult{"lru": {ColdMs: 1000, TotalLoadMs: 1000}, tflite.DefaultPolicy: {ColdMs: 500, TotalLoadMs: 600}},
		SimLearned: map[string]ReplayResult{"lru": {ColdMs: 900, TotalLoadMs: 900}, tflite.DefaultPolicy: {ColdMs: 550, TotalLoadMs: 660}}}
	var b strings.Builder
	writeLearnedCheck(&b, v)
	out := b.String()
	for _, want := range []string{"other 2 pairs", "1000 / 900 (-10%)", "500 / 550 (+10%)", "held-out 2.00×, simulated 1.64×"} {
		if !strings.Contains(out, want) {
			t.Errorf("check lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	writeLearnedCheck(&b, Validation{RealRatios: []float64{2}})
	if b.Len() != 0 {
		t.Errorf("with one pair (nothing held out) the check says: %s", b.String())
	}
}
