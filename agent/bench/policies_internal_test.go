package bench

import (
	"strings"
	"testing"

	"github.com/edge-agent/edge-agent/tflite"
)

// The policies section names both axes a policy spends on, per cell and in
// the charts, and calls the knapsack what it is: no ceiling.
func TestPoliciesSectionShowsBothAxes(t *testing.T) {
	p := Policies{Seed: 42, Models: 3, Footprint: 3 << 20, Shares: []float64{.25, .5, .75}, Storage: []Storage{{"page cache", 0}},
		Cells: map[string]map[string]map[float64]map[string]ReplayResult{"page cache": {}}, Requests: map[string]int{}}
	for _, shape := range TraceShapes {
		p.Cells["page cache"][shape] = map[float64]map[string]ReplayResult{}
		for _, share := range p.Shares {
			row := map[string]ReplayResult{}
			for _, pol := range tflite.Policies {
				row[pol] = ReplayResult{Policy: pol, Requests: 10, ColdMs: 100, TotalLoadMs: 100, BestFixedSetMs: 50}
			}
			row[tflite.DefaultPolicy] = ReplayResult{Requests: 10, ColdMs: 40, BackgroundLoads: 3, BackgroundWasted: 1, BackgroundMs: 80, TotalLoadMs: 120, BackgroundJoules: 0.5}
			p.Cells["page cache"][shape][share] = row
		}
	}
	p.Validation = Validation{Shape: "heavy", Share: .5, Real: map[string]ReplayResult{}, Sim: map[string]ReplayResult{}, RealRatios: []float64{2}, RealTotalRatios: []float64{.8}}
	var b strings.Builder
	writePolicies(&b, p)
	out := b.String()
	for _, want := range []string{"total load work", "cold × / total ×", "2.50× / 0.83×", "3 (1), 80.0", "--seed 42", "best fixed set"} {
		if !strings.Contains(out, want) {
			t.Errorf("section lacks %q", want)
		}
	}
	if strings.Contains(strings.ToLower(out), "ceiling") {
		t.Error("the section still calls the best fixed set a ceiling")
	}
	for _, total := range []bool{false, true} {
		svg := policiesChart(p, p.Storage[0], total)
		if !strings.HasPrefix(svg, "<svg") || !strings.Contains(svg, map[bool]string{false: "Cold time", true: "Total load work"}[total]) {
			t.Errorf("chart (total %v): %.120s", total, svg)
		}
	}
}
