package agent

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/power"
)

// The pool's budget holds what the pool accounts; the kernel counts the
// whole process. This file keeps the two side by side: the agent's own
// baseline, "auto" budgets from the cgroup's limit, and a response to
// memory pressure that the budget alone does not see.

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
func (a *Agent) memory() power.Memory {
	if a.opts.Memory != nil {
		return a.opts.Memory()
	}
	return power.ReadMemory("/")
}

func (a *Agent) memoryReport() MemoryReport {
	r := MemoryReport{Memory: a.memory(), BaselineBytes: a.baseline, Plan: a.plan.Load(), Decode: a.decodes.Stats()}
	if a.pool != nil {
		s := a.pool.Stats()
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
func (a *Agent) memoryPlan() MemoryPlan {
	c := a.config()
	m := a.memory()
	p := MemoryPlan{LimitBytes: m.Limit(), LimitSource: "machine", BaselineBytes: a.baseline,
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
func (a *Agent) poolBudget() int64 {
	b := a.config().Pool.Budget
	if b != AutoBudget {
		return int64(b)
	}
	return a.memoryPlan().PoolBudgetBytes
}

// applyMemoryPlan makes the plan at start: the decode budget, and under a
// cgroup limit with pool.budget = "auto" the Go runtime's soft memory
// limit (unless GOMEMLIMIT is set, or memory is read from a fake), so the garbage decodes leave is
// collected before the heap passes its share instead of at twice the live
// heap.
func (a *Agent) applyMemoryPlan() MemoryPlan {
	p := a.memoryPlan()
	a.decodes = infer.NewDecodeBudget(p.DecodeBudgetBytes)
	if p.PoolAuto && p.LimitSource == "cgroup" && a.opts.Memory == nil && os.Getenv("GOMEMLIMIT") == "" {
		p.GoLimitBytes = p.BaselineBytes + p.DecodeBudgetBytes + p.MQTTQueueBytes + p.SlackBytes
		debug.SetMemoryLimit(p.GoLimitBytes)
	}
	a.plan.Store(&p)
	if !p.Fits {
		a.log.Warn("memory plan does not fit the limit", "plan", p)
	}
	return p
}

// memoryLoop checks for memory pressure every pool.memory_check.
func (a *Agent) memoryLoop(ctx context.Context) {
	every := a.config().Pool.MemoryCheck
	if every <= 0 {
		return
	}
	a.loops.every(ctx, "memory", every, func() {
		if ctx.Err() == nil {
			a.relievePressure()
		}
	})
}

// relievePressure evicts idle unpinned models when the cgroup is above
// pressure_high of its limit (down to pressure_low), or when tasks stall
// on memory (PSI) without a limit to measure against (half the pool). It
// returns how many models it evicted.
func (a *Agent) relievePressure() int {
	c := a.config().Pool
	m := a.memory()
	held := a.pool.Stats().BytesInUse
	var target int64
	var why string
	switch {
	case m.CgroupMax != nil && m.CgroupCurrent != nil && float64(*m.CgroupCurrent) >= c.PressureHigh*float64(*m.CgroupMax):
		excess := *m.CgroupCurrent - int64(c.PressureLow*float64(*m.CgroupMax))
		target, why = max(held-excess, 0), "cgroup memory above pressure_high"
	case m.PressureSome10 != nil && *m.PressureSome10 >= c.PressurePSI:
		target, why = held/2, "memory stalls (PSI)"
	default:
		if a.decodes.Stats().Shedding && a.pressureOver(m) {
			a.decodes.SetShedding(false)
			a.log.Info("memory pressure over: decoding again")
			a.tel.event("memory_pressure_over", map[string]any{"memory": m})
		}
		return 0
	}
	// New decodes are refused until the pressure drops; the garbage of
	// those that ran is returned to the kernel.
	a.decodes.SetShedding(true)
	debug.FreeOSMemory()
	n := a.pool.ShrinkTo(target, "memory_pressure")
	after := a.pool.Stats().BytesInUse
	a.log.Warn("memory pressure: evicted idle models", "reason", why, "evicted", n, "bytes_before", held, "bytes_after", after)
	a.tel.event("memory_pressure", map[string]any{"reason": why, "evicted": n, "bytes_before": held, "bytes_after": after,
		"memory": m})
	return n
}

// pressureOver says the cgroup is back below pressure_low of its limit
// (or, without a limit, that tasks no longer stall on memory).
func (a *Agent) pressureOver(m power.Memory) bool {
	c := a.config().Pool
	if m.CgroupMax != nil && m.CgroupCurrent != nil {
		return float64(*m.CgroupCurrent) < c.PressureLow*float64(*m.CgroupMax)
	}
	return m.PressureSome10 == nil || *m.PressureSome10 < c.PressurePSI/2
}
