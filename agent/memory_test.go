package agent_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// budget = "auto" splits what the cgroup's limit leaves beyond the
// agent's baseline (without a limit, what the machine has available): a
// quarter for image decodes, a tenth for the MQTT queue (shortened to
// fit), a tenth of slack, the rest for the pool; the parts add up to the
// limit, and status and the startup report say so.
func TestAutoBudgetFromTheCgroupLimit(t *testing.T) {
	cfg := testConfig(t, agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	cfg.Pool.Budget = agent.AutoBudget
	mem := power.Memory{RSSBytes: 40 << 20, CgroupCurrent: ptr[int64](48 << 20), CgroupMax: ptr[int64](200 << 20)}
	a := start(t, cfg, agent.Options{Memory: func() power.Memory { return mem }})
	defer a.Close()
	const headroom = 160 << 20
	want := agent.MemoryPlan{LimitBytes: 200 << 20, LimitSource: "cgroup", BaselineBytes: 40 << 20, PoolAuto: true,
		DecodeBudgetBytes: headroom / 4, MQTTQueue: headroom/10>>20 - cfg.MQTT.CommandWorkers, MQTTQueueBytes: headroom / 10,
		SlackBytes: headroom / 10, PoolBudgetBytes: headroom - headroom/4 - 2*(headroom/10), Fits: true}
	m := a.Status().Metrics.Memory
	if m.Plan == nil || *m.Plan != want {
		t.Fatalf("plan in status: %+v, want %+v", m.Plan, want)
	}
	if r := a.Report(); r.Memory == nil || *r.Memory != want {
		t.Fatalf("plan in the startup report: %+v", r.Memory)
	}
	if got := a.Pool().Stats().Budget; got != want.PoolBudgetBytes {
		t.Fatalf("auto budget %d, want %d", got, want.PoolBudgetBytes)
	}
	if m.Decode.BudgetBytes != want.DecodeBudgetBytes {
		t.Fatalf("decode budget %d, want %d", m.Decode.BudgetBytes, want.DecodeBudgetBytes)
	}
	if m.BaselineBytes != 40<<20 || m.BudgetBytes != a.Pool().Stats().Budget || m.AccountedBytes != a.Pool().Stats().BytesInUse || m.RSSBytes != 40<<20 {
		t.Fatalf("memory in status: %+v", m)
	}
	a.Close()

	mem = power.Memory{RSSBytes: 40 << 20, MemAvailable: 1 << 30}
	b := start(t, cfg, agent.Options{Memory: func() power.Memory { return mem }})
	defer b.Close()
	p := b.Status().Metrics.Memory.Plan
	if p.LimitSource != "machine" || p.LimitBytes != 1<<30+40<<20 || !p.Fits ||
		p.BaselineBytes+p.PoolBudgetBytes+p.DecodeBudgetBytes+p.MQTTQueueBytes+p.SlackBytes != p.LimitBytes {
		t.Fatalf("plan without a cgroup limit: %+v", p)
	}
	if got := b.Pool().Stats().Budget; got != p.PoolBudgetBytes || got < (1<<30)/2 {
		t.Fatalf("auto budget without a cgroup limit: %d, plan %+v", got, p)
	}
}

// Above pressure_high of the cgroup's limit, idle unpinned models are
// evicted until the cgroup is back under pressure_low; pinned ones stay.
func TestMemoryPressureEvictsDownToTheLowWatermark(t *testing.T) {
	models := planModels(t) // xor pinned, v1, v2, lstm
	cfg := testConfig(t, models...)
	cfg.Pool.MemoryCheck = 10 * time.Millisecond
	var pressure atomic.Bool
	var limit atomic.Int64
	a := start(t, cfg, agent.Options{Memory: func() power.Memory {
		m := power.Memory{RSSBytes: 60 << 20, CgroupCurrent: ptr[int64](1 << 20), CgroupMax: ptr[int64](1 << 30)}
		if pressure.Load() {
			// The cgroup at 92.5 % of a limit four times what the pool holds:
			// its excess over 80 % is half the pool.
			l := limit.Load()
			m.CgroupMax, m.CgroupCurrent = ptr(l), ptr(l*925/1000)
		}
		return m
	}})
	defer a.Close()
	ctx := context.Background()
	for _, id := range []string{"v1", "v2", "lstm"} {
		if _, err := a.Command(ctx, mqtt.Command{Verb: "prewarm", Payload: []byte(`{"model":"` + id + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	held := a.Pool().Stats().BytesInUse
	limit.Store(4 * held)
	excess := 4*held*925/1000 - 4*held*8/10
	pressure.Store(true)
	deadline := time.Now().Add(30 * time.Second)
	for a.Pool().Stats().BytesInUse > held-excess {
		if time.Now().After(deadline) {
			t.Fatalf("pool still holds %d of %d under pressure (excess %d): %+v", a.Pool().Stats().BytesInUse, held, excess, a.Pool().Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	pressure.Store(false)
	if !a.Pool().IsWarm("xor") {
		t.Fatal("pinned model evicted under pressure")
	}
	if s := a.Pool().Stats(); s.Evictions == 0 {
		t.Fatalf("no eviction: %+v", s)
	}
}

// Thousands of requests cycling the shared models under a budget that
// forces evictions: the process's RSS stays within the budget plus 32 MiB
// of its own idle baseline, and does not creep up over the run.
func TestSoakRSSHoldsTheBudget(t *testing.T) {
	tflitetest.Long(t)
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	ids := []string{"xor", "lstm", "v1", "v2", "bird"}
	files := []string{"xor_model.tflite", "keras_lstm_mnist_ptq.tflite", "mobilenet_v1_0.25_128_quant.tflite",
		"mobilenet_v2_1.0_224_quant.tflite", "mobilenet_v2_1.0_224_inat_bird_quant.tflite"}
	var models []agent.ModelConfig
	for i, id := range ids {
		models = append(models, agent.ModelConfig{ID: id, Path: tflitetest.Path(t, files[i])})
	}
	cfg := testConfig(t, models...)
	cfg.Pool.Budget = 10 << 20 // v2 and bird (7.5 MiB each warm) never fit together
	cfg.Prewarm.KeepAlive = 0
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	ctx := context.Background()
	inputs := map[string][]byte{}
	for _, m := range a.Pool().Models() {
		l, err := a.Pool().Acquire(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		inputs[m.ID] = make([]byte, l.Interpreter().Inputs()[0].Bytes)
		l.Release()
	}
	// The idle baseline of this process: every model evicted, heap
	// returned, Go's garbage collected.
	for _, id := range ids {
		a.Pool().Evict(id)
	}
	runtime.GC()
	base := power.ReadMemory("/").RSSBytes
	budget := int64(cfg.Pool.Budget)
	const n = 2000
	var peak, firstQuarter, lastQuarter int64
	for i := range n {
		id := ids[i%len(ids)]
		if _, err := a.Command(ctx, mqtt.Command{Verb: "infer", Binary: true, Model: id, ID: "s", Payload: inputs[id]}); err != nil {
			t.Fatalf("request %d (%s): %v", i, id, err)
		}
		if i%10 != 0 {
			continue
		}
		rss := power.ReadMemory("/").RSSBytes
		peak = max(peak, rss)
		switch {
		case i < n/4:
			firstQuarter = max(firstQuarter, rss)
		case i >= 3*n/4:
			lastQuarter = max(lastQuarter, rss)
		}
	}
	s := a.Pool().Stats()
	t.Logf("idle baseline %.1f MiB, budget %.1f MiB, peak RSS %.1f MiB (+%.1f), first quarter max %.1f, last quarter max %.1f; %d evictions, peak accounted %.1f MiB",
		mib(base), mib(budget), mib(peak), mib(peak-base), mib(firstQuarter), mib(lastQuarter), s.Evictions, mib(s.PeakBytes))
	if s.Evictions < uint64(n/len(ids)) {
		t.Fatalf("the budget did not force evictions: %+v", s)
	}
	if peak > base+budget+32<<20 {
		t.Fatalf("peak RSS %.1f MiB > baseline %.1f + budget %.1f + 32 MiB", mib(peak), mib(base), mib(budget))
	}
	if lastQuarter > firstQuarter+8<<20 {
		t.Fatalf("RSS crept up: %.1f MiB in the first quarter, %.1f in the last", mib(firstQuarter), mib(lastQuarter))
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
