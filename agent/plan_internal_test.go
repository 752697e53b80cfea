package agent

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
		in      planInput
		chosen  []string
		skipped []string
		reason  string // a substring of the first skip's reason
	}{
		{"pinned first, then by score", planInput{Wake: wake, Allowance: all, Watts: 2, Models: []planModel{
			{ID: "big", Demand: 1, Stages: cal(10 * ms), Bytes: 40 * mib, Threads: 1},
			{ID: "pin", Pinned: true, Demand: 0, Stages: cal(10 * ms), Bytes: 40 * mib, Threads: 1},
			{ID: "small", Demand: 1, Stages: cal(500 * ms), Bytes: 4 * mib, Threads: 1},
		}}, []string{"pin", "small", "big"}, nil, ""},
		// Saved time and joules both follow the cold time: per joule, a
		// slow load is worth no more than a fast one of the same size.
		{"cold time cancels out per joule; ties keep demand order", planInput{Wake: wake, Allowance: all, Watts: 2, Models: []planModel{
			{ID: "slow", Demand: 1, Stages: cal(500 * ms), Bytes: 4 * mib, Threads: 1},
			{ID: "fast", Demand: 2, Stages: cal(10 * ms), Bytes: 4 * mib, Threads: 1},
		}}, []string{"fast", "slow"}, nil, ""},
		{"demand outweighs size", planInput{Wake: wake, Allowance: all, Watts: 2, Models: []planModel{
			{ID: "rare", Demand: 0, Stages: cal(100 * ms), Bytes: 4 * mib, Threads: 1},
			{ID: "hot", Demand: 50, Stages: cal(100 * ms), Bytes: 16 * mib, Threads: 1},
		}}, []string{"hot", "rare"}, nil, ""},
		{"more threads cost more joules", planInput{Wake: wake, Allowance: all, Watts: 2, Models: []planModel{
			{ID: "four", Demand: 1, Stages: cal(100 * ms), Bytes: 4 * mib, Threads: 4},
			{ID: "one", Demand: 1, Stages: cal(100 * ms), Bytes: 4 * mib, Threads: 1},
		}}, []string{"one", "four"}, nil, ""},
		{"not calibrated: by demand", planInput{Wake: wake, Allowance: all, Models: []planModel{
			{ID: "a", Demand: 1}, {ID: "b", Demand: 3}, {ID: "c", Demand: 2},
		}}, []string{"b", "c", "a"}, nil, ""},
		{"budget: what does not fit is skipped, pinned always fit", planInput{Wake: wake, Allowance: all, Budget: 10 * mib, Watts: 2, Models: []planModel{
			{ID: "pin", Pinned: true, Stages: cal(10 * ms), Bytes: 4 * mib},
			{ID: "big", Demand: 9, Stages: cal(900 * ms), Bytes: 8 * mib},
			{ID: "small", Demand: 1, Stages: cal(10 * ms), Bytes: 1 * mib},
		}}, []string{"pin", "small"}, []string{"big"}, "budget"},
		{"defer: nothing, not even pinned, after start", planInput{Wake: wake, Allowance: power.Allowance{Mode: power.ModeDefer, Reason: "hot"}, Models: []planModel{
			{ID: "pin", Pinned: true}, {ID: "x", Demand: 1},
		}}, nil, []string{"pin", "x"}, "policy defer"},
		{"at start pinned models warm whatever the policy", planInput{Wake: start, Allowance: power.Allowance{Mode: power.ModeNone, Reason: "battery critical"}, Models: []planModel{
			{ID: "pin", Pinned: true}, {ID: "x", Demand: 1},
		}}, []string{"pin"}, []string{"x"}, "policy none"},
		{"pinned only", planInput{Wake: wake, Allowance: power.Allowance{Mode: power.ModePinned, Reason: "battery low"}, Models: []planModel{
			{ID: "pin", Pinned: true}, {ID: "x", Demand: 1},
		}}, []string{"pin"}, []string{"x"}, "pinned only"},
		{"top k counts unpinned models only", planInput{Wake: wake, Allowance: power.Allowance{Mode: power.ModeTopK, TopK: 1, Reason: "battery"}, Models: []planModel{
			{ID: "pin", Pinned: true}, {ID: "x", Demand: 3}, {ID: "y", Demand: 2},
		}}, []string{"pin", "x"}, []string{"y"}, "top 1"},
		{"a family's fast variant warms before its precise one", planInput{Wake: wake, Allowance: all, Watts: 2,
			Families: []FamilyConfig{{ID: "cls", Variants: []string{"fast", "precise"}}}, Models: []planModel{
				{ID: "precise", Demand: 9, Stages: cal(500 * ms), Bytes: 4 * mib},
				{ID: "fast", Demand: 1, Stages: cal(10 * ms), Bytes: 4 * mib},
			}}, []string{"fast", "precise"}, nil, ""},
	}
	ids := func(items []PlanItem) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.Model)
		}
		return out
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := plan(c.in)
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
			if again := plan(c.in); !slices.Equal(ids(again.Chosen), ids(p.Chosen)) {
				t.Error("a second plan of the same input differs")
			}
		})
	}
}

// A fleet member's wake plans are staggered by default, a lone device's
// are not, and power.max_stagger, when larger, wins.
func TestFleetStaggerDefault(t *testing.T) {
	c := DefaultConfig()
	if got := c.policy().MaxStagger; got != 0 {
		t.Fatalf("a device without brokers staggers by %v", got)
	}
	c.MQTT.Brokers = []string{"tcp://broker:1883"}
	if got := c.policy().MaxStagger; got != time.Second {
		t.Fatalf("a fleet member staggers by %v, want 1s", got)
	}
	c.Power.MaxStagger = 5 * time.Second
	if got := c.policy().MaxStagger; got != 5*time.Second {
		t.Fatalf("power.max_stagger 5s gave %v", got)
	}
	c.Power.MaxStagger, c.Fleet.Enabled = 0, false
	if got := c.policy().MaxStagger; got != 0 {
		t.Fatalf("fleet off staggers by %v", got)
	}
}
