package agent

import (
	"context"

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
}

// memory reads the process's memory now.
func (a *Agent) memory() power.Memory {
	if a.opts.Memory != nil {
		return a.opts.Memory()
	}
	return power.ReadMemory("/")
}

func (a *Agent) memoryReport() MemoryReport {
	r := MemoryReport{Memory: a.memory(), BaselineBytes: a.baseline}
	if a.pool != nil {
		s := a.pool.Stats()
		r.AccountedBytes, r.BudgetBytes = s.BytesInUse, s.Budget
	}
	return r
}

// minAutoBudget is the least an "auto" budget gives the pool.
const minAutoBudget = 16 << 20

// poolBudget is the configured budget, or "auto" resolved: 60 % of what
// the agent may use beyond its baseline.
func (a *Agent) poolBudget() int64 {
	b := a.config().Pool.Budget
	if b != AutoBudget {
		return int64(b)
	}
	m := a.memory()
	return max((m.Limit()-a.baseline)*6/10, minAutoBudget)
}

// memoryLoop checks for memory pressure every pool.memory_check.
func (a *Agent) memoryLoop(ctx context.Context) {
	every := a.config().Pool.MemoryCheck
	if every <= 0 {
		return
	}
	a.loop(ctx, "memory", every, func() {
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
		return 0
	}
	n := a.pool.ShrinkTo(target, "memory_pressure")
	after := a.pool.Stats().BytesInUse
	a.log.Warn("memory pressure: evicted idle models", "reason", why, "evicted", n, "bytes_before", held, "bytes_after", after)
	a.event("memory_pressure", map[string]any{"reason": why, "evicted": n, "bytes_before": held, "bytes_after": after,
		"memory": m})
	return n
}
