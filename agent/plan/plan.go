// Package plan decides what a wake warms: it scores each model by the
// cold-start time a warm interpreter saves per byte held and per joule
// spent, and fits them to the energy allowance and the memory budget.
// Make is a pure function of its Input.
package plan

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite"
)

// Item is one model in a plan: what warming it is worth and costs.
//
// Score = (demand + 0.01) × saved_ms / (MiB held × joules to warm):
// expected requests (this hour and the next, from the usage history) times
// the cold-start time a warm interpreter saves each, per byte held and per
// joule spent warming it (calibrated cold time × threads × watts).
type Item struct {
	Model   string  `json:"model"`
	Pinned  bool    `json:"pinned"`
	Demand  float64 `json:"demand"`
	SavedMs float64 `json:"saved_ms"`
	Bytes   int64   `json:"bytes"`
	Joules  float64 `json:"joules"`
	Score   float64 `json:"score"`
	Reason  string  `json:"reason,omitempty"` // why it was skipped
}

// Plan is what a wake warms, and why.
type Plan struct {
	Wake      power.Wake      `json:"wake"`
	Power     power.State     `json:"power"`
	Allowance power.Allowance `json:"allowance"`
	Chosen    []Item          `json:"chosen"`
	Skipped   []Item          `json:"skipped"`
}

// Result is what running a plan did.
type Result struct {
	Plan      Plan         `json:"plan"`
	Warmed    []string     `json:"warmed"`          // models warmed by this plan
	Already   []string     `json:"already"`         // chosen but already warm
	Failed    []string     `json:"failed"`          // warm-up failed
	Later     []string     `json:"later,omitempty"` // chosen, warmed in the background after READY
	Cancelled bool         `json:"cancelled"`       // a newer wake (or shutdown) cut it short
	Energy    power.Energy `json:"energy"`          // of the whole plan
}

// Input is everything a plan depends on; Make is a pure function of it.
type Input struct {
	Wake      power.Wake
	Power     power.State
	Allowance power.Allowance
	Models    []Model
	Budget    int64   // the pool's; 0 means none
	Watts     float64 // per CPU-second, for the joules a warm-up costs
	Families  []Family
}

// Family is a model family as the plan sees it: its variants, fastest first.
type Family struct {
	ID       string
	Variants []string
}

// Model is one registered model as the planner sees it.
type Model struct {
	ID      string
	Pinned  bool
	Demand  float64       // expected requests this hour and the next
	Stages  tflite.Stages // calibrated; zero when not calibrated yet
	Bytes   int64         // calibrated footprint
	Threads int
}

// score rates warming m: see Item.
func score(m Model, watts float64) Item {
	it := Item{Model: m.ID, Pinned: m.Pinned, Demand: m.Demand, Bytes: m.Bytes}
	it.SavedMs = ms(m.Stages.Saved())
	it.Joules = m.Stages.Cold().Seconds() * float64(max(m.Threads, 1)) * watts
	it.Score = (it.Demand + 0.01) * it.SavedMs / (math.Max(float64(it.Bytes)/(1<<20), 0.01) * math.Max(it.Joules, 1e-3))
	return it
}

// Make ranks the models and fits them to the energy allowance and the
// memory budget. At start, pinned models are chosen whatever the
// allowance says: the agent is not ready without them.
func Make(in Input) Plan {
	al := in.Allowance
	p := Plan{Wake: in.Wake, Power: in.Power, Allowance: al, Chosen: []Item{}, Skipped: []Item{}}
	items := make([]Item, 0, len(in.Models))
	for _, m := range in.Models {
		items = append(items, score(m, in.Watts))
	}
	sort.SliceStable(items, func(i, j int) bool {
		if items[i].Pinned != items[j].Pinned {
			return items[i].Pinned
		}
		if items[i].Score != items[j].Score {
			return items[i].Score > items[j].Score
		}
		// Not calibrated yet (no saved time to score): by demand.
		return items[i].Demand > items[j].Demand
	})

	var used int64
	others := 0
	for _, it := range items {
		skip := ""
		switch {
		case it.Pinned && in.Wake.Source == "start":
		case al.Mode == power.ModeDefer || al.Mode == power.ModeNone:
			skip = fmt.Sprintf("policy %s: %s", al.Mode, al.Reason)
		case it.Pinned:
		case al.Mode == power.ModePinned:
			skip = fmt.Sprintf("policy pinned only: %s", al.Reason)
		case al.Mode == power.ModeTopK && others >= al.TopK:
			skip = fmt.Sprintf("policy top %d: %s", al.TopK, al.Reason)
		}
		if skip == "" && !it.Pinned && in.Budget > 0 && used+it.Bytes > in.Budget {
			skip = fmt.Sprintf("needs %d bytes, %d of %d budget already planned", it.Bytes, used, in.Budget)
		}
		if skip != "" {
			it.Reason = skip
			p.Skipped = append(p.Skipped, it)
			continue
		}
		used += it.Bytes
		if !it.Pinned {
			others++
		}
		p.Chosen = append(p.Chosen, it)
	}
	p.Chosen = fastFirst(p.Chosen, in.Families)
	return p
}

// fastFirst moves each family's fast variants ahead of its precise one,
// so requests have an answer while the precise one warms.
func fastFirst(chosen []Item, families []Family) []Item {
	rank := map[string]int{}
	for _, f := range families {
		for i, v := range f.Variants {
			rank[v] = i + 1
		}
	}
	out := append([]Item{}, chosen...)
	sort.SliceStable(out, func(i, j int) bool {
		ri, rj := rank[out[i].Model], rank[out[j].Model]
		return ri != 0 && rj != 0 && ri < rj
	})
	return out
}

// ms is a duration in milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
