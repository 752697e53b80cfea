package plan

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite"
)

func TestPlanIsAPureFunctionOfItsInputs(t *testing.T) {
	ms := time.Millisecond
	cal := func(cold time.Duration) tflite.Stages {
		return tflite.Stages{Map: cold / 10, Interpreter: cold / 10, Allocate: cold * 7 / 10, FirstInvoke: cold / 10}
	}
	all := power.Allowance{Mode: power.ModeAll, Reason: "on external power"}
	start := power.Wake{Source: "start"}
	wake := power.Wake{Source: "usr1"}
	mib := int64(1 << 20)
	cases := []struct {
		name    string
		in      Input
		chosen  []string
		skipped []string
		reason  string // a substring of the first skip's reason
	}{
		{"pinned first, then by score", Input{Wake: wake, Allowance: all, Watts: 2, Models: []Model{
			{ID: "big", Demand: 1, Stages: cal(10 * ms), Bytes: 40 * mib, Threads: 1},
			{ID: "pin", Pinned: true, Demand: 0, Stages: cal(10 * ms), Bytes: 40 * mib, Threads: 1},
			{ID: "small", Demand: 1, Stages: cal(500 * ms), Bytes: 4 * mib, Threads: 1},
		}}, []string{"pin", "small", "big"}, nil, ""},
		// Saved time and joules both follow the cold time: per joule, a
		// slow load is worth no more than a fast one of the same size.
		{"cold time cancels out per joule; ties keep demand order", Input{Wake: wake, Allowance: all, Watts: 2, Models: []Model{
			{ID: "slow", Demand: 1, Stages: cal(500 * ms), Bytes: 4 * mib, Threads: 1},
			{ID: "fast", Demand: 2, Stages: cal(10 * ms), Bytes: 4 * mib, Threads: 1},
		}}, []string{"fast", "slow"}, nil, ""},
		{"demand outweighs size", Input{Wake: wake, Allowance: all, Watts: 2, Models: []Model{
			{ID: "rare", Demand: 0, Stages: cal(100 * ms), Bytes: 4 * mib, Threads: 1},
			{ID: "hot", Demand: 50, Stages: cal(100 * ms), Bytes: 16 * mib, Threads: 1},
		}}, []string{"hot", "rare"}, nil, ""},
		{"more threads cost more joules", Input{Wake: wake, Allowance: all, Watts: 2, Models: []Model{
			{ID: "four", Demand: 1, Stages: cal(100 * ms), Bytes: 4 * mib, Threads: 4},
			{ID: "one", Demand: 1, Stages: cal(100 * ms), Bytes: 4 * mib, Threads: 1},
		}}, []string{"one", "four"}, nil, ""},
		{"not calibrated: by demand", Input{Wake: wake, Allowance: all, Models: []Model{
			{ID: "a", Demand: 1}, {ID: "b", Demand: 3}, {ID: "c", Demand: 2},
		}}, []string{"b", "c", "a"}, nil, ""},
		{"budget: what does not fit is skipped, pinned always fit", Input{Wake: wake, Allowance: all, Budget: 10 * mib, Watts: 2, Models: []Model{
			{ID: "pin", Pinned: true, Stages: cal(10 * ms), Bytes: 4 * mib},
			{ID: "big", Demand: 9, Stages: cal(900 * ms), Bytes: 8 * mib},
			{ID: "small", Demand: 1, Stages: cal(10 * ms), Bytes: 1 * mib},
		}}, []string{"pin", "small"}, []string{"big"}, "budget"},
		{"defer: nothing, not even pinned, after start", Input{Wake: wake, Allowance: power.Allowance{Mode: power.ModeDefer, Reason: "hot"}, Models: []Model{
			{ID: "pin", Pinned: true}, {ID: "x", Demand: 1},
		}}, nil, []string{"pin", "x"}, "policy defer"},
		{"at start pinned models warm whatever the policy", Input{Wake: start, Allowance: power.Allowance{Mode: power.ModeNone, Reason: "battery critical"}, Models: []Model{
			{ID: "pin", Pinned: true}, {ID: "x", Demand: 1},
		}}, []string{"pin"}, []string{"x"}, "policy none"},
		{"pinned only", Input{Wake: wake, Allowance: power.Allowance{Mode: power.ModePinned, Reason: "battery low"}, Models: []Model{
			{ID: "pin", Pinned: true}, {ID: "x", Demand: 1},
		}}, []string{"pin"}, []string{"x"}, "pinned only"},
		{"top k counts unpinned models only", Input{Wake: wake, Allowance: power.Allowance{Mode: power.ModeTopK, TopK: 1, Reason: "battery"}, Models: []Model{
			{ID: "pin", Pinned: true}, {ID: "x", Demand: 3}, {ID: "y", Demand: 2},
		}}, []string{"pin", "x"}, []string{"y"}, "top 1"},
		{"a family's fast variant warms before its precise one", Input{Wake: wake, Allowance: all, Watts: 2,
			Families: []Family{{ID: "cls", Variants: []string{"fast", "precise"}}}, Models: []Model{
				{ID: "precise", Demand: 9, Stages: cal(500 * ms), Bytes: 4 * mib},
				{ID: "fast", Demand: 1, Stages: cal(10 * ms), Bytes: 4 * mib},
			}}, []string{"fast", "precise"}, nil, ""},
	}
	ids := func(items []Item) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.Model)
		}
		return out
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Make(c.in)
			if got := ids(p.Chosen); !slices.Equal(got, c.chosen) {
				t.Errorf("chosen %v, want %v", got, c.chosen)
			}
			if got := ids(p.Skipped); !slices.Equal(got, c.skipped) {
				t.Errorf("skipped %v, want %v", got, c.skipped)
			}
			if c.reason != "" && (len(p.Skipped) == 0 || !strings.Contains(p.Skipped[0].Reason, c.reason)) {
				t.Errorf("skip reasons %+v, want one mentioning %q", p.Skipped, c.reason)
			}
			// Pure: the same input plans the same.
			if again := Make(c.in); !slices.Equal(ids(again.Chosen), ids(p.Chosen)) {
				t.Error("a second plan of the same input differs")
			}
		})
	}
}
