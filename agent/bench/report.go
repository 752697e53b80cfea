package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/edge-agent/edge-agent/tflite"
)

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s/%s, %d cores, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), model)
}

func runtimeVersion() string { return tflite.RuntimeVersion() }

func f2(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 0.1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// spread is "median (p5–p95)".
func spread(d Dist) string {
	if d.N <= 1 {
		return f2(d.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f2(d.Median), f2(d.P5), f2(d.P95))
}

func ratio(base, v float64) string {
	if v <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", base/v)
}

// Summary is the headline table (also for the README).
func Summary(r Report) string {
	var b strings.Builder
	s := r.Startup
	naive := s.FirstRequest[Naive].Median
	fmt.Fprintf(&b, "| measure (%s) | naive | agent | naive ÷ agent |\n|---|---|---|---|\n", strings.TrimSuffix(s.Model, ".tflite"))
	fmt.Fprintf(&b, "| first request after a wake, prewarmed (ms) | %s | %s | %s |\n", f2(naive), f2(s.FirstRequest[Prewarmed].Median), ratio(naive, s.FirstRequest[Prewarmed].Median))
	fmt.Fprintf(&b, "| start → first result, restored state (ms) | %s | %s | %s |\n", f2(s.ToFirst[Naive].Median), f2(s.ToFirst[Restored].Median), ratio(s.ToFirst[Naive].Median, s.ToFirst[Restored].Median))
	fmt.Fprintf(&b, "| start → first result, empty state (ms) | %s | %s | %s |\n", f2(s.ToFirst[Naive].Median), f2(s.ToFirst[Cold].Median), ratio(s.ToFirst[Naive].Median, s.ToFirst[Cold].Median))
	if fs := r.FirstStart; len(fs.Models) > 0 {
		fmt.Fprintf(&b, "| first start, %d models asked at t=0: all answered (ms) | %s | %s | %s |\n", len(fs.Models),
			f2(fs.AllAnswered[Naive].Median), f2(fs.AllAnswered[Cold].Median), ratio(fs.AllAnswered[Naive].Median, fs.AllAnswered[Cold].Median))
		fmt.Fprintf(&b, "| model added at run time → its first answer (ms) | %s | %s | %s |\n",
			f2(fs.Added[Naive].Median), f2(fs.Added[Cold].Median), ratio(fs.Added[Naive].Median, fs.Added[Cold].Median))
	}
	fmt.Fprintf(&b, "| first ÷ steady latency (each its own steady) | %.2f | %.2f (prewarmed) | |\n", naive/s.Steady.Median, s.FirstRequest[Prewarmed].Median/s.AgentSteady.Median)
	sv := r.Serving
	fmt.Fprintf(&b, "| bursty trace, %d requests over 4 models: p99 (ms) | %s | %s | %s |\n", sv.Requests,
		f2(quantile(sv.Samples[Naive], 0.99)), f2(quantile(sv.Samples[Prewarmed], 0.99)),
		ratio(quantile(sv.Samples[Naive], 0.99), quantile(sv.Samples[Prewarmed], 0.99)))
	if len(r.Scaling.Points) > 0 {
		p := r.Scaling.Points[len(r.Scaling.Points)-1]
		fmt.Fprintf(&b, "| load a %.0f MiB model (ms) | %s | %s | %s |\n", p.SizeMiB, f2(p.HeapMs.Median), f2(p.MappedMs.Median), ratio(p.HeapMs.Median, p.MappedMs.Median))
		fmt.Fprintf(&b, "| anonymous memory for it (MiB) | %s | %s | |\n", f2(p.HeapAnonMiB), f2(p.MappedAnonMiB))
	}
	ca, lru := r.Memory.Policies[tflite.DefaultPolicy], r.Memory.Policies["lru"]
	fmt.Fprintf(&b, "| budget ½ of models: cold time paid, %s vs LRU (ms) | %s (LRU) | %s | %s |\n", tflite.DefaultPolicy, f2(lru.ColdPaidMs), f2(ca.ColdPaidMs), ratio(lru.ColdPaidMs, ca.ColdPaidMs))
	if row := r.Policies.Cells[sdCard.Name]["heavy"][.5]; row != nil {
		for _, st := range r.Policies.Storage {
			row := r.Policies.Cells[st.Name]["heavy"][.5]
			fmt.Fprintf(&b, "| heavy-tailed trace, budget ½, %s: cold time paid, %s vs LRU (ms) | %s (LRU) | %s | %s |\n", st.Name, tflite.DefaultPolicy,
				f2(row["lru"].ColdMs), f2(row[tflite.DefaultPolicy].ColdMs), ratio(row["lru"].ColdMs, row[tflite.DefaultPolicy].ColdMs))
			fmt.Fprintf(&b, "| heavy-tailed trace, budget ½, %s: total load work (cold + background loads), %s vs LRU (ms) | %s (LRU) | %s | %s |\n", st.Name, tflite.DefaultPolicy,
				f2(row["lru"].TotalLoadMs), f2(row[tflite.DefaultPolicy].TotalLoadMs), ratio(row["lru"].TotalLoadMs, row[tflite.DefaultPolicy].TotalLoadMs))
		}
	}
	if v := r.Policies.Validation; len(v.RealRatios) > 0 {
		fmt.Fprintf(&b, "| heavy-tailed trace, budget ½, real replay (%d pairs in step): cold time paid, %s vs LRU (ms) | %s (LRU) | %s | %s× |\n", len(v.RealRatios), tflite.DefaultPolicy,
			f2(v.Real["lru"].ColdMs), f2(v.Real[tflite.DefaultPolicy].ColdMs), spread(dist(v.RealRatios)))
		fmt.Fprintf(&b, "| heavy-tailed trace, budget ½, real replay (%d pairs in step): total load work, %s vs LRU (ms) | %s (LRU) | %s | %s× |\n", len(v.RealTotalRatios), tflite.DefaultPolicy,
			f2(v.Real["lru"].TotalLoadMs), f2(v.Real[tflite.DefaultPolicy].TotalLoadMs), spread(dist(v.RealTotalRatios)))
	}
	e := r.Energy.CPUSecond
	fmt.Fprintf(&b, "| wake CPU-seconds, AC vs 15%% battery | %s (AC) | %s | %s |\n", f2(e["AC"].Median), f2(e["battery 15% (pinned only)"].Median),
		ratio(e["AC"].Median, e["battery 15% (pinned only)"].Median))
	return b.String()
}

func write(dir string, r Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# edge-agent benchmark\n\n%s · TFLite %s · %s · run took %s\n\n", r.When.Format("2006-01-02 15:04 UTC"), r.Runtime, r.Machine, r.Duration.Round(1e9))
	b.WriteString("Every comparison ran interleaved in this one process run; figures are medians with the 5th–95th percentile in parentheses. Reproduce: `make bench`.\n\n")
	b.WriteString("## Summary\n\n" + Summary(r) + "\n")

	s := r.Startup
	fmt.Fprintf(&b, "## Startup (%s, %d runs each)\n\n", s.Model, s.ToFirst[Naive].N)
	b.WriteString("- naive: read the file into memory, `NewModel`, one interpreter, loaded at the first request;\n")
	b.WriteString("- agent cold: empty state: the model is served at once with safe defaults (threads = cores, CPU) and calibrated in the background afterwards;\n")
	b.WriteString("- agent restored: state from the previous run, nothing prewarmed: the first request loads;\n")
	b.WriteString("- agent prewarmed: a wake warmed the model before the request.\n\n")
	b.WriteString("Each configuration starts with the model file dropped from the page cache (`fadvise(DONTNEED)`), as after a resume or boot: whoever loads first reads it from storage. On a VM's virtual disk that read is fast; on an SD card it is not.\n\n")
	b.WriteString("| configuration | start (or wake) → first result, ms | first request, ms | first ÷ steady | vs naive (first request) |\n|---|---|---|---|---|\n")
	for _, c := range Configs {
		steady := s.AgentSteady.Median
		if c == Naive {
			steady = s.Steady.Median
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %s |\n", c, spread(s.ToFirst[c]), spread(s.FirstRequest[c]),
			s.FirstRequest[c].Median/steady, ratio(s.FirstRequest[Naive].Median, s.FirstRequest[c].Median))
	}
	fmt.Fprintf(&b, "\nSteady request (the physical limit for a first request): naive %s ms with %d threads, agent %s ms with its auto-tuned threads.\n\n![startup waterfall](startup.svg)\n\n",
		spread(s.Steady), runtime.NumCPU(), spread(s.AgentSteady))

	writeFirstStart(&b, r.FirstStart, "")
	writeSD(&b, r)
	writeProcess(&b, r.Process, r.Startup.Model)

	sv := r.Serving
	fmt.Fprintf(&b, "## Serving\n\nA bursty trace: %d requests in bursts of 5–20 to one of four models (weighted), 20–150 ms idle between bursts, replayed on both, interleaved.\n\n", sv.Requests)
	b.WriteString("| configuration | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|\n")
	for _, c := range []string{Naive, Prewarmed} {
		v := sv.Samples[c]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", c, f2(quantile(v, .5)), f2(quantile(v, .95)), f2(quantile(v, .99)), f2(quantile(v, 1)))
	}
	b.WriteString("\n![latency CDF](latency-cdf.svg)\n\n")
	fmt.Fprintf(&b, "Throughput, two clients on %s for a fixed time:\n\n| configuration | requests/s |\n|---|---|\n", sv.ThroughputModel)
	keys := make([]string, 0, len(sv.Throughput))
	for k := range sv.Throughput {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "| %s | %.0f |\n", k, sv.Throughput[k])
	}
	fmt.Fprintf(&b, "\nPool overhead: Acquire + Release of a warm interpreter %.0f ns.\n\n", sv.AcquireReleaseNs)

	m := r.Memory
	fmt.Fprintf(&b, "## Memory under a budget\n\n%d requests over 6 models (4 real, 2 generated of 16 and 24 MiB) that together hold %.1f MiB, with a budget of %.1f MiB; the same trace with each eviction policy.\n\n",
		m.Requests, float64(m.SumBytes)/(1<<20), float64(m.Budget)/(1<<20))
	b.WriteString("| policy | hit rate | misses | evictions | cold time paid, ms | cold time saved, ms | max accounted MiB | peak RSS MiB |\n|---|---|---|---|---|---|---|---|\n")
	for _, name := range tflite.Policies {
		p := m.Policies[name]
		fmt.Fprintf(&b, "| %s | %.0f%% | %d | %d | %s | %s | %.1f | %.1f |\n", name, 100*p.HitRate, p.Misses, p.Evictions, f2(p.ColdPaidMs), f2(p.ColdSavedMs),
			float64(p.MaxAccounted)/(1<<20), float64(p.PeakRSS)/(1<<20))
	}
	b.WriteString("\nAccounted bytes never exceeded the budget; RSS also holds the Go runtime, the TFLite library and this benchmark's own buffers.\n\n")

	writePolicies(&b, r.Policies)

	b.WriteString("## Scaling: mapped vs read into the heap\n\n| model MiB | mapped load, ms | heap load, ms | heap ÷ mapped | anonymous MiB, mapped | anonymous MiB, heap |\n|---|---|---|---|---|---|\n")
	for _, p := range r.Scaling.Points {
		fmt.Fprintf(&b, "| %.0f | %s | %s | %s | %s | %s |\n", p.SizeMiB, spread(p.MappedMs), spread(p.HeapMs), ratio(p.HeapMs.Median, p.MappedMs.Median), f2(p.MappedAnonMiB), f2(p.HeapAnonMiB))
	}
	b.WriteString("\n![load time vs size](scaling.svg)\n\n")

	e := r.Energy
	fmt.Fprintf(&b, "## Energy\n\nCPU-seconds one wake spends prewarming %d models (one pinned):\n\n| policy | CPU-seconds | models warmed |\n|---|---|---|\n", e.Models)
	for _, k := range []string{"AC", "battery 15% (pinned only)"} {
		fmt.Fprintf(&b, "| %s | %s | %d |\n", k, spread(e.CPUSecond[k]), e.Warmed[k])
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	charts := map[string]string{"startup.svg": waterfall(r.Startup), "latency-cdf.svg": cdf(r.Serving), "scaling.svg": scalingChart(r.Scaling)}
	for i, st := range r.Policies.Storage {
		charts[chartName(i, "cold")] = policiesChart(r.Policies, st, false)
		charts[chartName(i, "total")] = policiesChart(r.Policies, st, true)
	}
	for name, svg := range charts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(svg), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func writeFirstStart(b *strings.Builder, fs FirstStart, where string) {
	if len(fs.Models) == 0 {
		return
	}
	if where != "" {
		fmt.Fprintf(b, "### First start %s (%d models, empty state, %d runs)\n\n", where, len(fs.Models), fs.AllAnswered[Naive].N)
	} else {
		fmt.Fprintf(b, "## First start (%d models, empty state, %d runs)\n\n", len(fs.Models), fs.AllAnswered[Naive].N)
		b.WriteString("A client sends one request per model at t=0: for naive at process start (each request loads its model, one goroutine per request), for the agent right after `Start` returns on an empty state. Time to the first correct answer (output identical to the naive loop's), every model file dropped from the page cache first.\n\n")
	}
	b.WriteString("| model | naive, ms | agent, ms | naive ÷ agent |\n|---|---|---|---|\n")
	for _, id := range fs.Models {
		n, a := fs.ToAnswer[Naive][id], fs.ToAnswer[Cold][id]
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", id, spread(n), spread(a), ratio(n.Median, a.Median))
	}
	n, a := fs.AllAnswered[Naive], fs.AllAnswered[Cold]
	fmt.Fprintf(b, "| **all answered** | %s | %s | %s |\n\n", spread(n), spread(a), ratio(n.Median, a.Median))
	n, a = fs.Added[Naive], fs.Added[Cold]
	fmt.Fprintf(b, "A model added at run time (%s): the agent serves the others, a file appears, `rescan` registers it and a request follows at once; naive loads it at its request. Rescan (or request) → answer: naive %s ms, agent %s ms (%s).\n\n",
		fs.AddedModel, spread(n), spread(a), ratio(n.Median, a.Median))
	if fs.Wrong > 0 {
		fmt.Fprintf(b, "**%d answers differed from the naive loop's output.**\n\n", fs.Wrong)
	}
}

// writeSD writes the startup and first-start rows measured on the emulated
// SD card, or why they were not measured.
func writeSD(b *strings.Builder, r Report) {
	sd := r.SD
	fmt.Fprintf(b, "## On an SD card (%.0f MB/s)\n\n", sd.Rate/1e6)
	if sd.NotMeasured != "" {
		fmt.Fprintf(b, "Not measured: %s.\n\n", sd.NotMeasured)
		return
	}
	fmt.Fprintf(b, "The startup and first-start runs again, with the models on an ext4 image on a loop device (direct I/O) whose reads the cgroup blkio controller throttles to %.0f MB/s; the bench process is in that cgroup, so naive and the agent read everything they read before their first answer at the card's rate (a cold read of %s measured %.1f MB/s through it). The state file stays on the machine's disk.\n\n",
		sd.Rate/1e6, r.StartupSD.Model, sd.Measured/1e6)
	s := r.StartupSD
	fmt.Fprintf(b, "| configuration (%s) | start (or wake) → first result, ms | first request, ms | vs naive (start → first result) |\n|---|---|---|---|\n", s.Model)
	for _, c := range Configs {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", c, spread(s.ToFirst[c]), spread(s.FirstRequest[c]), ratio(s.ToFirst[Naive].Median, s.ToFirst[c].Median))
	}
	b.WriteString("\n")
	writeFirstStart(b, r.FirstStartSD, "on the SD card")
}

// writeProcess writes the rows measured with separate processes over MQTT,
// or why they were not measured.
func writeProcess(b *strings.Builder, p ProcessRows, model string) {
	b.WriteString("## As separate processes over MQTT\n\n")
	if p.NotMeasured != "" {
		fmt.Fprintf(b, "Not measured: %s.\n\n", p.NotMeasured)
		return
	}
	fmt.Fprintf(b, "What a device sees after boot: a real mosquitto on loopback is already up; the clock starts when the process is spawned. The agent (`edge-agent run` with a configuration file, fresh device id) is asked once its retained status says online (spawn → online, empty state: %s ms), for raw output; naive is `edge-agent-bench naive`, a process doing the in-process naive loop's work and printing each answer. Every agent answer equals naive's bytes. %d runs, model files dropped from the page cache first.\n\n",
		spread(p.Online), p.ToFirst[Naive].N)
	fmt.Fprintf(b, "| %s: spawn → first answer | naive, ms | agent, ms | naive ÷ agent |\n|---|---|---|---|\n", model)
	for _, c := range []string{Cold, Restored} {
		n, a := p.ToFirst[Naive], p.ToFirst[c]
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", c, spread(n), spread(a), ratio(n.Median, a.Median))
	}
	b.WriteString("\n| first start: spawn → answer | naive, ms | agent, ms | naive ÷ agent |\n|---|---|---|---|\n")
	ids := make([]string, 0, len(p.ToAnswer[Naive]))
	for _, m := range firstStartModels {
		if _, ok := p.ToAnswer[Naive][m.id]; ok {
			ids = append(ids, m.id)
		}
	}
	for _, id := range ids {
		n, a := p.ToAnswer[Naive][id], p.ToAnswer[Cold][id]
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", id, spread(n), spread(a), ratio(n.Median, a.Median))
	}
	b.WriteString("\n")
}
