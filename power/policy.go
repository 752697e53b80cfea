package power

import (
	"fmt"
	"time"
)

// Mode is how much prewarming the device can afford.
type Mode string

const (
	ModeAll    Mode = "all"    // warm everything the planner predicts
	ModeTopK   Mode = "top_k"  // pinned models and the top K others
	ModePinned Mode = "pinned" // pinned models only
	ModeNone   Mode = "none"   // nothing: models load on their first request
	ModeDefer  Mode = "defer"  // not now (too hot, CPU busy): retry later
)

// Policy turns a power state into a prewarm allowance. The zero value means
// the defaults, which are this table, checked top to bottom:
//
//	headroom to a trip point < 5 °C, or any zone ≥ 80 °C   defer 30s
//	1-min load per core ≥ 0.9                              defer 30s
//	on AC (or no battery)                                  all
//	battery < 10 %                                         none
//	battery < 20 %                                         pinned
//	otherwise (battery)                                    top_k, K = 2
type Policy struct {
	CriticalPercent int           // below it on battery: none. Default 10.
	LowPercent      int           // below it on battery: pinned only. Default 20.
	BatteryTopK     int           // on battery above low: K. Default 2.
	MinHeadroomC    float64       // closer to a trip point: defer. Default 5.
	MaxTempC        float64       // at or above (boards without trips): defer. Default 80.
	BusyLoadPerCore float64       // at or above: defer. Default 0.9.
	DeferFor        time.Duration // retry a deferred plan after. Default 30s.
	// MaxStagger spreads a fleet that wakes together: each device waits a
	// random time in [0, MaxStagger) before warming. Default 0 (none).
	MaxStagger time.Duration
}

func (p *Policy) defaults() {
	if p.CriticalPercent == 0 {
		p.CriticalPercent = 10
	}
	if p.LowPercent == 0 {
		p.LowPercent = 20
	}
	if p.BatteryTopK == 0 {
		p.BatteryTopK = 2
	}
	if p.MinHeadroomC == 0 {
		p.MinHeadroomC = 5
	}
	if p.MaxTempC == 0 {
		p.MaxTempC = 80
	}
	if p.BusyLoadPerCore == 0 {
		p.BusyLoadPerCore = 0.9
	}
	if p.DeferFor == 0 {
		p.DeferFor = 30 * time.Second
	}
}

// Allowance is what the policy allows now, and why.
type Allowance struct {
	Mode    Mode          `json:"mode"`
	TopK    int           `json:"top_k,omitempty"`
	Reason  string        `json:"reason"`
	RetryIn time.Duration `json:"retry_in_ns,omitempty"`
	Stagger time.Duration `json:"stagger_ns,omitempty"`
}

// Allow applies the policy to s; rnd (in [0,1)) draws the stagger.
func (p Policy) Allow(s State, rnd func() float64) Allowance {
	p.defaults()
	a := p.allow(s)
	if p.MaxStagger > 0 && rnd != nil && a.Mode != ModeDefer && a.Mode != ModeNone {
		a.Stagger = time.Duration(rnd() * float64(p.MaxStagger))
	}
	return a
}

func (p Policy) allow(s State) Allowance {
	switch {
	case s.HeadroomC != nil && *s.HeadroomC < p.MinHeadroomC:
		return Allowance{Mode: ModeDefer, RetryIn: p.DeferFor, Reason: fmt.Sprintf("%.1f °C from a trip point (< %.1f)", *s.HeadroomC, p.MinHeadroomC)}
	case s.MaxTempC != nil && *s.MaxTempC >= p.MaxTempC:
		return Allowance{Mode: ModeDefer, RetryIn: p.DeferFor, Reason: fmt.Sprintf("%.1f °C ≥ %.1f", *s.MaxTempC, p.MaxTempC)}
	case s.LoadPerCore() >= p.BusyLoadPerCore:
		return Allowance{Mode: ModeDefer, RetryIn: p.DeferFor, Reason: fmt.Sprintf("CPU busy: load %.2f per core ≥ %.2f", s.LoadPerCore(), p.BusyLoadPerCore)}
	case s.OnAC:
		return Allowance{Mode: ModeAll, Reason: "on external power"}
	}
	if s.Battery == nil || s.Battery.Capacity == nil {
		return Allowance{Mode: ModeTopK, TopK: p.BatteryTopK, Reason: "on battery, charge unknown"}
	}
	c := *s.Battery.Capacity
	switch {
	case c < p.CriticalPercent:
		return Allowance{Mode: ModeNone, Reason: fmt.Sprintf("battery %d%% < critical %d%%", c, p.CriticalPercent)}
	case c < p.LowPercent:
		return Allowance{Mode: ModePinned, Reason: fmt.Sprintf("battery %d%% < low %d%%", c, p.LowPercent)}
	}
	return Allowance{Mode: ModeTopK, TopK: p.BatteryTopK, Reason: fmt.Sprintf("on battery at %d%%", c)}
}
