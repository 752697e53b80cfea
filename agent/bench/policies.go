package bench

// The policies section: every eviction policy replayed over generated
// traces of every shape, at a quarter, half and three quarters of the
// zoo's footprint, with the measured costs (simulated replay) on this
// machine's page cache and on an emulated SD card; and one trace replayed
// for real beside its simulation, to say how far the simulator is off.

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/tflite"
)

// Policies is what the section measured.
type Policies struct {
	Seed      int64 // the zoo's and the traces'
	Models    int
	Footprint int64
	Shares    []float64
	Storage   []Storage
	// Cells[storage][shape][share][policy]
	Cells      map[string]map[string]map[float64]map[string]ReplayResult
	Requests   map[string]int // per shape
	Validation Validation
}

// Storage is where a cold model is read from.
type Storage struct {
	Name     string
	ReadRate float64 // bytes/s; 0: the page cache keeps every model
}

// Validation is one trace replayed for real (a few pairs in step)
// and simulated.
type Validation struct {
	Shape string
	Share float64
	// Real holds each policy's real run of median cold time, Sim its
	// simulated run.
	Real, Sim map[string]ReplayResult
	// RealRatios is LRU ÷ the default's cold time, per real pair: one
	// real pair of a short trace is mostly this machine's noise.
	RealRatios []float64
	// RealTotalRatios is LRU ÷ the default's total load work, per pair.
	RealTotalRatios []float64
	// SimLearned is each policy simulated on the costs learned from the
	// first real pair's misses (learnedCosts), HeldOut its real run of
	// median cold time among the other pairs: the simulator's error on
	// runs it did not learn from. Empty with one pair.
	SimLearned, HeldOut map[string]ReplayResult
}

// validationPairs is how many real LRU/default pairs the simulator check
// runs (1 with Quick); a pair of the heavy trace takes about 2 minutes.
const validationPairs = 3

// sdCard is a class-10 card's sequential read, as on a Pi.
var sdCard = Storage{"SD card, 25 MB/s (simulated)", 25e6}

func policies(ctx context.Context, o Options, work string) (Policies, error) {
	dir := filepath.Join(work, "zoo")
	if err := BuildZoo(dir, o.Models, o.Quick, o.Seed); err != nil {
		return Policies{}, err
	}
	reps := 5
	if o.Quick {
		reps = 2
	}
	costs, err := zooCosts(ctx, dir, reps, true)
	if err != nil {
		return Policies{}, err
	}
	ids, _, err := zooModels(dir)
	if err != nil {
		return Policies{}, err
	}
	out := Policies{Seed: o.Seed, Models: len(ids), Footprint: footprint(costs), Shares: []float64{.25, .5, .75},
		Storage:  []Storage{{"page cache (this machine)", 0}, sdCard},
		Cells:    map[string]map[string]map[float64]map[string]ReplayResult{},
		Requests: map[string]int{}}
	var dur time.Duration // the shapes' defaults
	if o.Quick {
		dur = 10 * time.Minute
	}
	traces := map[string][]TraceRequest{}
	for _, shape := range TraceShapes {
		t, err := GenerateTrace(TraceOptions{Shape: shape, Models: ids, Seed: o.Seed, Duration: dur})
		if err != nil {
			return out, err
		}
		traces[shape] = t
		out.Requests[shape] = len(t)
	}
	for _, st := range out.Storage {
		out.Cells[st.Name] = map[string]map[float64]map[string]ReplayResult{}
		for _, shape := range TraceShapes {
			out.Cells[st.Name][shape] = map[float64]map[string]ReplayResult{}
			for _, share := range out.Shares {
				row := map[string]ReplayResult{}
				for _, pol := range tflite.Policies {
					r, err := Replay(ctx, ReplayOptions{Trace: traces[shape], Models: dir, Budget: budgetShare(costs, share),
						Policy: pol, Simulate: true, ReadRate: st.ReadRate, Costs: costs})
					if err != nil {
						return out, fmt.Errorf("%s %s %.0f%% %s: %w", st.Name, shape, 100*share, pol, err)
					}
					row[pol] = r
				}
				out.Cells[st.Name][shape][share] = row
			}
		}
	}
	// The simulator against the real thing: the whole heavy-tailed trace
	// of the table at half the footprint, LRU and the default. A slice of
	// it would measure the default mostly before it has seen five idle
	// times of each model, which the table's figure does not.
	vt := traces["heavy"]
	if o.Quick {
		vt = vt[:min(len(vt), 120)]
	}
	out.Validation = Validation{Shape: "heavy", Share: .5, Real: map[string]ReplayResult{}, Sim: map[string]ReplayResult{}}
	pols := []string{"lru", tflite.DefaultPolicy}
	// The budget is always the measured costs' share (a footprint is
	// sizes, not times), whichever costs a simulation replays.
	simulate := func(pol string, simCosts map[string]Cost) (ReplayResult, error) {
		r, err := Replay(ctx, ReplayOptions{Trace: vt, Models: dir, Budget: budgetShare(costs, .5), Policy: pol, Simulate: true, Costs: simCosts})
		if err != nil {
			return r, fmt.Errorf("validation %s: %w", pol, err)
		}
		return r, nil
	}
	pairs := validationPairs
	if o.Quick {
		pairs = 1
	}
	realRuns := map[string][]ReplayResult{}
	for range pairs {
		// In step, request by request, so a slow minute of the machine
		// falls on both.
		p, err := ReplayPair(ctx, ReplayOptions{Trace: vt, Models: dir, Budget: budgetShare(costs, .5), Policy: pols[1], Costs: costs}, pols[0])
		if err != nil {
			return out, fmt.Errorf("validation: %w", err)
		}
		realRuns[pols[0]] = append(realRuns[pols[0]], p.Baseline)
		realRuns[pols[1]] = append(realRuns[pols[1]], p.Policy)
		out.Validation.RealRatios = append(out.Validation.RealRatios, p.ColdRatio)
		out.Validation.RealTotalRatios = append(out.Validation.RealTotalRatios, p.TotalLoadRatio)
	}
	if pairs > 1 {
		learned := learnedCosts(costs, realRuns["lru"][0], realRuns[tflite.DefaultPolicy][0])
		out.Validation.HeldOut, out.Validation.SimLearned = medianRuns(realRuns, 1), map[string]ReplayResult{}
		for _, pol := range pols {
			r, err := simulate(pol, learned)
			if err != nil {
				return out, fmt.Errorf("learned costs: %w", err)
			}
			out.Validation.SimLearned[pol] = r
		}
	}
	out.Validation.Real = medianRuns(realRuns, 0)
	for _, pol := range pols {
		r, err := simulate(pol, costs)
		if err != nil {
			return out, err
		}
		out.Validation.Sim[pol] = r
	}
	return out, nil
}

// gibHours is byte-seconds in GiB·h.
func gibHours(byteSeconds float64) float64 { return byteSeconds / (1 << 30) / 3600 }

func budgetShare(costs map[string]Cost, share float64) int64 {
	return int64(share * float64(footprint(costs)))
}

// relErr is (sim - real) / real, in percent.
func relErr(sim, real float64) string {
	if real == 0 {
		return "—"
	}
	return fmt.Sprintf("%+.0f%%", 100*(sim-real)/real)
}

func writePolicies(b *strings.Builder, p Policies) {
	if len(p.Cells) == 0 {
		return
	}
	fmt.Fprintf(b, "## Eviction policies on traces\n\n%d models (the shared ones that run on a CPU and generated ones of 1–256 MiB) holding %.0f MiB warm in all (`edge-agent-bench zoo --seed %d`); traces from `edge-agent-bench trace --seed %d`: ", p.Models, float64(p.Footprint)/(1<<20), p.Seed, p.Seed)
	var shapes []string
	for _, s := range TraceShapes {
		shapes = append(shapes, fmt.Sprintf("%s %d requests", s, p.Requests[s]))
	}
	b.WriteString(strings.Join(shapes, ", ") + ". Each cell is a simulated replay (`edge-agent-bench replay --simulate`) with the costs measured here, and names both things a policy spends against LRU: **cold time** (what requests paid loading, LRU's ÷ the policy's) and **total load work** (the requests' cold time plus the policy's own background loads: pre-warms and rewarms, LRU's ÷ the policy's); above 1× the policy spends less. A request that arrives while a background load holds the load slot pays the wait as cold time. The default's background loads are listed with how many were evicted before any request used them (wasted), their CPU-seconds and joules by the agent's power model. The last column is LRU's cold time ÷ what the best fixed set of warm models would pay at LRU's cost per miss (a knapsack; `best_fixed_set_ms` in `replay --json`): a reference point, not a bound (a policy that times its loads beats it).\n\n")
	for i, st := range p.Storage {
		fmt.Fprintf(b, "### %s\n\n| trace | budget | LRU cold / total load ms |", st.Name)
		for _, pol := range tflite.Policies {
			if pol != "lru" {
				fmt.Fprintf(b, " %s cold × / total × |", pol)
			}
		}
		fmt.Fprintf(b, " %s background loads (wasted), ms, CPU-s, J | cold starts LRU → %s | p50 / p99 ms LRU → %s | held GiB·h LRU → %s | best fixed set |\n|---|---|---|", tflite.DefaultPolicy, tflite.DefaultPolicy, tflite.DefaultPolicy, tflite.DefaultPolicy)
		for range len(tflite.Policies) - 1 {
			b.WriteString("---|")
		}
		b.WriteString("---|---|---|---|---|\n")
		for _, shape := range TraceShapes {
			for _, share := range p.Shares {
				row := p.Cells[st.Name][shape][share]
				lru, def := row["lru"], row[tflite.DefaultPolicy]
				fmt.Fprintf(b, "| %s | %.0f%% | %s / %s |", shape, 100*share, f2(lru.ColdMs), f2(lru.TotalLoadMs))
				for _, pol := range tflite.Policies {
					if pol != "lru" {
						r := row[pol]
						fmt.Fprintf(b, " %s / %s |", ratio(lru.ColdMs, r.ColdMs), ratio(lru.TotalLoadMs, r.TotalLoadMs))
					}
				}
				fmt.Fprintf(b, " %d (%d), %s, %s, %s | %d → %d | %s / %s → %s / %s | %s → %s | %s |\n", def.BackgroundLoads, def.BackgroundWasted, f2(def.BackgroundMs), f2(def.BackgroundCPUSeconds), f2(def.BackgroundJoules),
					lru.ColdStarts, def.ColdStarts, f2(lru.P50Ms), f2(lru.P99Ms), f2(def.P50Ms), f2(def.P99Ms), f2(gibHours(lru.ByteSeconds)), f2(gibHours(def.ByteSeconds)), ratio(lru.ColdMs, lru.BestFixedSetMs))
			}
		}
		fmt.Fprintf(b, "\n![cold time saved over LRU, %s](%s)\n\n![total load work saved over LRU, %s](%s)\n\n", st.Name, chartName(i, "cold"), st.Name, chartName(i, "total"))
	}
	v := p.Validation
	fmt.Fprintf(b, "**Simulator check**: the %s trace (%d requests) at %.0f%% of the footprint, replayed for real (loads and invokes; %d pairs, the two policies in step request by request (`ReplayPair`), each policy's run of median cold time shown) and simulated:\n\n", v.Shape, v.Real["lru"].Requests, 100*v.Share, len(v.RealRatios))
	b.WriteString("| policy | cold starts real / sim | cold ms real / sim (error) | background loads real / sim | total load ms real / sim (error) | evictions real / sim | p50 ms real / sim | p99 ms real / sim |\n|---|---|---|---|---|---|---|---|\n")
	for _, pol := range []string{"lru", tflite.DefaultPolicy} {
		r, s := v.Real[pol], v.Sim[pol]
		fmt.Fprintf(b, "| %s | %d / %d | %s / %s (%s) | %d / %d | %s / %s (%s) | %d / %d | %s / %s | %s / %s |\n", pol, r.ColdStarts, s.ColdStarts, f2(r.ColdMs), f2(s.ColdMs), relErr(s.ColdMs, r.ColdMs),
			r.BackgroundLoads, s.BackgroundLoads, f2(r.TotalLoadMs), f2(s.TotalLoadMs), relErr(s.TotalLoadMs, r.TotalLoadMs), r.Evictions, s.Evictions, f2(r.P50Ms), f2(s.P50Ms), f2(r.P99Ms), f2(s.P99Ms))
	}
	rr, sr := dist(v.RealRatios), v.Sim["lru"].ColdMs/math.Max(v.Sim[tflite.DefaultPolicy].ColdMs, 1e-9)
	fmt.Fprintf(b, "\nLRU ÷ %s cold time: real %s× (median of the pairs, p5–p95), simulated %.2f×; total load work: real %s× (median of the pairs, p5–p95), simulated %s; LRU ÷ the best fixed warm set (at each run's own cost per miss): real %s, simulated %s. The simulator replays each model's median measured load; real loads under churn vary around it.\n\n",
		tflite.DefaultPolicy, spread(rr), sr, spread(dist(v.RealTotalRatios)), ratio(v.Sim["lru"].TotalLoadMs, v.Sim[tflite.DefaultPolicy].TotalLoadMs),
		ratio(v.Real["lru"].ColdMs, v.Real["lru"].BestFixedSetMs), ratio(v.Sim["lru"].ColdMs, v.Sim["lru"].BestFixedSetMs))
	writeLearnedCheck(b, v)
}

// writeLearnedCheck is the simulator on learned costs against the pairs
// it did not learn from.
func writeLearnedCheck(b *strings.Builder, v Validation) {
	if len(v.SimLearned) == 0 {
		return
	}
	fmt.Fprintf(b, "The simulator again, on costs learned from the first pair's misses (each model's cold time per cold start, in place of its isolated load; `learnedCosts`), against the other %d pairs, which it did not learn from (each policy's held-out run of median cold time):\n\n", len(v.RealRatios)-1)
	b.WriteString("| policy | cold starts held-out / sim | cold ms held-out / sim (error) | total load ms held-out / sim (error) |\n|---|---|---|---|\n")
	for _, pol := range []string{"lru", tflite.DefaultPolicy} {
		r, s := v.HeldOut[pol], v.SimLearned[pol]
		fmt.Fprintf(b, "| %s | %d / %d | %s / %s (%s) | %s / %s (%s) |\n", pol, r.ColdStarts, s.ColdStarts, f2(r.ColdMs), f2(s.ColdMs), relErr(s.ColdMs, r.ColdMs),
			f2(r.TotalLoadMs), f2(s.TotalLoadMs), relErr(s.TotalLoadMs, r.TotalLoadMs))
	}
	fmt.Fprintf(b, "\nLRU ÷ %s on learned costs: cold time held-out %s, simulated %s.\n\n", tflite.DefaultPolicy,
		ratio(v.HeldOut["lru"].ColdMs, v.HeldOut[tflite.DefaultPolicy].ColdMs), ratio(v.SimLearned["lru"].ColdMs, v.SimLearned[tflite.DefaultPolicy].ColdMs))
}

// policiesChart: for one storage, each policy's cold time (or with total,
// total load work) saved over LRU (LRU ÷ policy) at every shape and
// budget, as grouped bars; the line at 1× is LRU.
func policiesChart(p Policies, st Storage, total bool) string {
	spent, title := func(r ReplayResult) float64 { return r.ColdMs }, "Cold time"
	if total {
		spent, title = func(r ReplayResult) float64 { return r.TotalLoadMs }, "Total load work (cold + background loads)"
	}
	var b strings.Builder
	pols := []string{}
	for _, pol := range tflite.Policies {
		if pol != "lru" {
			pols = append(pols, pol)
		}
	}
	groups := len(TraceShapes) * len(p.Shares)
	w, h, l, r, t, bt := 980, 420, 60, 20, 60, 70
	svgOpen(&b, w, h, title+" saved over LRU (LRU ÷ policy), "+st.Name)
	maxY := 1.0
	for _, shape := range TraceShapes {
		for _, share := range p.Shares {
			row := p.Cells[st.Name][shape][share]
			for _, pol := range pols {
				if c := spent(row[pol]); c > 0 {
					maxY = math.Max(maxY, spent(row["lru"])/c)
				}
			}
		}
	}
	maxY = math.Ceil(maxY*2) / 2
	gw := float64(w-l-r) / float64(groups)
	bw := gw * 0.8 / float64(len(pols))
	py := func(v float64) float64 { return float64(h-bt) - v/maxY*float64(h-t-bt) }
	for v := 0.0; v <= maxY+1e-9; v += 0.5 {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%.1f×</text>`+"\n", l, py(v), w-r, py(v), l-6, py(v)+4, v)
	}
	g := 0
	for _, shape := range TraceShapes {
		for _, share := range p.Shares {
			row := p.Cells[st.Name][shape][share]
			x0 := float64(l) + float64(g)*gw + gw*0.1
			for i, pol := range pols {
				v := 0.0
				if c := spent(row[pol]); c > 0 {
					v = spent(row["lru"]) / c
				}
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s %.0f%%: %.2f×</title></rect>`+"\n",
					x0+float64(i)*bw, py(v), bw-1, py(0)-py(v), palette[i%len(palette)], pol, shape, 100*share, v)
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.0f%%</text>`+"\n", x0+gw*0.4, h-bt+14, 100*share)
			if share == p.Shares[len(p.Shares)/2] {
				fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x0+gw*0.4, h-bt+30, shape)
			}
			g++
		}
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="black" stroke-dasharray="4 3"/><text x="%d" y="%.1f">LRU</text>`+"\n", l, py(1), w-r, py(1), w-r-30, py(1)-4)
	for i, pol := range pols {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", l+i*120, 32, palette[i%len(palette)], l+i*120+16, 42, pol)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// chartName is the file of storage i's chart of what: "cold" (the name
// the README links to) or "total".
func chartName(i int, what string) string {
	if what == "cold" {
		return fmt.Sprintf("policies-%d.svg", i+1)
	}
	return fmt.Sprintf("policies-%d-%s.svg", i+1, what)
}
