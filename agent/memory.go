package agent

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite"
)

// The pool's budget holds what the pool accounts; the kernel counts the
// whole process. This file keeps the two side by side: the agent's own
// baseline, "auto" budgets from the cgroup's limit, and a response to
// memory pressure that the budget alone does not see.

// memoryKeeper holds the memory plan made at start, the decode budget it
// sets, the pressure loop, and the page cache of the models' files. It
// holds no lock: baseline and decodes are written by the start before
// any goroutine that reads them is spawned; plan is swapped whole. Its
// loops run under the agent's runCtx.
type memoryKeeper struct {
	memoryDeps
	// files are the models' files below the pool: read rate, huge pages.
	files    *pageCache
	baseline int64 // RSS at start, before any model (MemoryReport)
	// decodes is the budget every image decode shares (nil: unbounded,
	// before Start); plan how the memory limit was split at start.
	decodes *infer.DecodeBudget
	plan    atomic.Pointer[MemoryPlan]
}

// memoryDeps is what the memory keeper asks of the agent. pool is a
// function: the pool exists only once the agent has started.
type memoryDeps struct {
	log    *slog.Logger
	config func() *Config
	pool   func() *tflite.Pool
	// read is Options.Memory: a fake for tests (nil: the process's own).
	read  func() power.Memory
	event func(kind string, fields map[string]any)
	// every runs f every interval (or on a test's ticks) until ctx ends.
	every func(ctx context.Context, name string, interval time.Duration, f func())
}

func newMemoryKeeper(d memoryDeps, files *pageCache) *memoryKeeper {
	return &memoryKeeper{memoryDeps: d, files: files}
}

// MemoryReport is the agent's memory next to what its pool accounts.
type MemoryReport struct {
	power.Memory
	// BaselineBytes is the agent's RSS at start, before any model.
	BaselineBytes int64 `json:"baseline_bytes"`
	// AccountedBytes and BudgetBytes are the pool's.
	AccountedBytes int64 `json:"accounted_bytes"`
	BudgetBytes    int64 `json:"budget_bytes"`
	// Plan is how the limit was split at start; Decode what the decode
	// budget holds and did.
	Plan   *MemoryPlan       `json:"plan,omitempty"`
	Decode infer.DecodeStats `json:"decode"`
}

// memory reads the process's memory now.
func (k *memoryKeeper) memory() power.Memory {
	if k.read != nil {
		return k.read()
	}
	return power.ReadMemory("/")
}

// limit is memory with what a plan needs only (power.ReadLimit): the
// plan is made on the start's path.
func (k *memoryKeeper) limit() power.Memory {
	if k.read != nil {
		return k.read()
	}
	return power.ReadLimit("/")
}

func (k *memoryKeeper) report() MemoryReport {
	r := MemoryReport{Memory: k.memory(), BaselineBytes: k.baseline, Plan: k.plan.Load(), Decode: k.decodes.Stats()}
	if pool := k.pool(); pool != nil {
		s := pool.Stats()
		r.AccountedBytes, r.BudgetBytes = s.BytesInUse, s.Budget
	}
	return r
}

// minAutoBudget is the least an "auto" budget gives the pool.
const minAutoBudget = 16 << 20

// minDecodeBudget is the least a derived decode budget gets: one
// ordinary image (a few megapixels) and its resize.
const minDecodeBudget = 24 << 20

// MemoryPlan is how the memory the agent may use is split: with
// pool.budget = "auto" the parts add up to the limit. Field names carry
// their units.
type MemoryPlan struct {
	// LimitBytes is the cgroup's memory limit (LimitSource "cgroup"),
	// else what the machine has available ("machine").
	LimitBytes  int64  `json:"limit_bytes"`
	LimitSource string `json:"limit_source"`
	// BaselineBytes is the agent's RSS at start, before any model.
	BaselineBytes int64 `json:"baseline_bytes"`
	// PoolBudgetBytes is what warm models may hold (pool.budget).
	PoolBudgetBytes int64 `json:"pool_budget_bytes"`
	PoolAuto        bool  `json:"pool_auto"`
	// DecodeBudgetBytes is what all image decodes in flight may hold
	// (infer.decode_budget).
	DecodeBudgetBytes int64 `json:"decode_budget_bytes"`
	// MQTTQueueBytes bounds the commands queued and running:
	// (MQTTQueue + workers) × max_payload. With "auto" the queue is
	// shortened to fit its share.
	MQTTQueueBytes int64 `json:"mqtt_queue_bytes"`
	MQTTQueue      int   `json:"mqtt_queue"`
	// SlackBytes is left for the allocator, the garbage collector's
	// headroom and goroutine stacks.
	SlackBytes int64 `json:"slack_bytes"`
	// GoLimitBytes is the Go runtime's soft memory limit set from the
	// plan (0: not set), so garbage from decodes is collected before the
	// heap passes baseline + decodes + queue + slack.
	GoLimitBytes int64 `json:"go_limit_bytes"`
	// Fits is false when the fixed parts add up to more than the limit.
	Fits bool `json:"fits"`
}

// memoryPlan splits what the agent may use beyond its baseline. With
// pool.budget = "auto": the decode budget (infer.decode_budget, else a
// quarter), the MQTT queue (at most a tenth: the queue is shortened), a
// tenth of slack, and the rest for the pool. A fixed pool budget keeps
// its size; a derived decode budget is then a quarter of what is left.
func (k *memoryKeeper) memoryPlan() MemoryPlan { return k.memoryPlanOf(k.memory()) }

// memoryPlanOf is memoryPlan on a reading m of the process's memory.
func (k *memoryKeeper) memoryPlanOf(m power.Memory) MemoryPlan {
	c := k.config()
	p := MemoryPlan{LimitBytes: m.Limit(), LimitSource: "machine", BaselineBytes: k.baseline,
		PoolAuto: c.Pool.Budget == AutoBudget, MQTTQueue: c.MQTT.CommandQueue}
	if m.CgroupMax != nil {
		p.LimitSource = "cgroup"
	}
	headroom := max(p.LimitBytes-p.BaselineBytes, 0)
	payload := int64(c.MQTT.MaxPayload)
	workers := int64(c.MQTT.CommandWorkers)
	p.SlackBytes = headroom / 10
	if p.PoolAuto {
		p.DecodeBudgetBytes = int64(c.Infer.DecodeBudget)
		if p.DecodeBudgetBytes <= 0 {
			p.DecodeBudgetBytes = max(headroom/4, minDecodeBudget)
		}
		if share := headroom / 10; int64(p.MQTTQueue+int(workers))*payload > share {
			p.MQTTQueue = int(max(share/payload-workers, 1))
		}
		p.MQTTQueueBytes = int64(p.MQTTQueue+int(workers)) * payload
		p.PoolBudgetBytes = max(headroom-p.DecodeBudgetBytes-p.MQTTQueueBytes-p.SlackBytes, minAutoBudget)
	} else {
		p.PoolBudgetBytes = int64(c.Pool.Budget)
		p.MQTTQueueBytes = int64(p.MQTTQueue+int(workers)) * payload
		p.DecodeBudgetBytes = int64(c.Infer.DecodeBudget)
		if p.DecodeBudgetBytes <= 0 {
			left := headroom - p.PoolBudgetBytes - p.MQTTQueueBytes - p.SlackBytes
			if p.PoolBudgetBytes == 0 { // no pool cap: the pool may take anything
				left = headroom / 2
			}
			p.DecodeBudgetBytes = max(left/4, minDecodeBudget)
		}
	}
	p.Fits = p.BaselineBytes+p.PoolBudgetBytes+p.DecodeBudgetBytes+p.MQTTQueueBytes+p.SlackBytes <= p.LimitBytes
	return p
}

// poolBudget is the configured budget, or "auto" resolved by the memory
// plan.
func (k *memoryKeeper) poolBudget() int64 {
	b := k.config().Pool.Budget
	if b != AutoBudget {
		return int64(b)
	}
	return k.memoryPlan().PoolBudgetBytes
}

// applyPlan makes the plan at start, on the agent's RSS before any model
// (its baseline): the decode budget, and under a cgroup limit with
// pool.budget = "auto" the Go runtime's soft memory limit (unless
// GOMEMLIMIT is set, or memory is read from a fake), so the garbage
// decodes leave is collected before the heap passes its share instead of
// at twice the live heap.
func (k *memoryKeeper) applyPlan() MemoryPlan {
	m := k.limit()
	k.baseline = m.RSSBytes
	p := k.memoryPlanOf(m)
	k.decodes = infer.NewDecodeBudget(p.DecodeBudgetBytes)
	if p.PoolAuto && p.LimitSource == "cgroup" && k.read == nil && os.Getenv("GOMEMLIMIT") == "" {
		p.GoLimitBytes = p.BaselineBytes + p.DecodeBudgetBytes + p.MQTTQueueBytes + p.SlackBytes
		debug.SetMemoryLimit(p.GoLimitBytes)
	}
	k.plan.Store(&p)
	if !p.Fits {
		k.log.Warn("memory plan does not fit the limit", "plan", p)
	}
	return p
}

// planned is the plan made at start (nil before).
func (k *memoryKeeper) planned() *MemoryPlan { return k.plan.Load() }

// loop checks for memory pressure every pool.memory_check.
func (k *memoryKeeper) loop(ctx context.Context) {
	every := k.config().Pool.MemoryCheck
	if every <= 0 {
		return
	}
	k.every(ctx, "memory", every, func() {
		if ctx.Err() == nil {
			k.relievePressure()
		}
	})
}

// relievePressure evicts idle unpinned models when the cgroup is above
// pressure_high of its limit (down to pressure_low), or when tasks stall
// on memory (PSI) without a limit to measure against (half the pool). It
// returns how many models it evicted.
func (k *memoryKeeper) relievePressure() int {
	c := k.config().Pool
	m := k.memory()
	pool := k.pool()
	held := pool.Stats().BytesInUse
	var target int64
	var why string
	switch {
	case m.CgroupMax != nil && m.CgroupCurrent != nil && float64(*m.CgroupCurrent) >= c.PressureHigh*float64(*m.CgroupMax):
		excess := *m.CgroupCurrent - int64(c.PressureLow*float64(*m.CgroupMax))
		target, why = max(held-excess, 0), "cgroup memory above pressure_high"
	case m.PressureSome10 != nil && *m.PressureSome10 >= c.PressurePSI:
		target, why = held/2, "memory stalls (PSI)"
	default:
		if k.decodes.Stats().Shedding && k.pressureOver(m) {
			k.decodes.SetShedding(false)
			k.log.Info("memory pressure over: decoding again")
			k.event("memory_pressure_over", map[string]any{"memory": m})
		}
		return 0
	}
	// New decodes are refused until the pressure drops; the garbage of
	// those that ran is returned to the kernel.
	k.decodes.SetShedding(true)
	debug.FreeOSMemory()
	n := pool.ShrinkTo(target, "memory_pressure")
	after := pool.Stats().BytesInUse
	k.log.Warn("memory pressure: evicted idle models", "reason", why, "evicted", n, "bytes_before", held, "bytes_after", after)
	k.event("memory_pressure", map[string]any{"reason": why, "evicted": n, "bytes_before": held, "bytes_after": after,
		"memory": m})
	return n
}

// pressureOver says the cgroup is back below pressure_low of its limit
// (or, without a limit, that tasks no longer stall on memory).
func (k *memoryKeeper) pressureOver(m power.Memory) bool {
	c := k.config().Pool
	if m.CgroupMax != nil && m.CgroupCurrent != nil {
		return float64(*m.CgroupCurrent) < c.PressureLow*float64(*m.CgroupMax)
	}
	return m.PressureSome10 == nil || *m.PressureSome10 < c.PressurePSI/2
}
