package tflite

import "time"

// allowance is a token bucket of background loads: perHour refill, at most
// a tenth of an hour's worth (and at least one) saved up. Guarded by
// Pool.mu.
type allowance struct {
	tokens float64
	at     time.Time
	primed bool
}

// take spends one load if the allowance has one; perHour 0 is no bound,
// < 0 allows none.
func (a *allowance) take(now time.Time, perHour float64) bool {
	switch {
	case perHour == 0:
		return true
	case perHour < 0:
		return false
	}
	capacity := max(perHour/10, 1)
	if !a.primed {
		a.tokens, a.at, a.primed = capacity, now, true
	}
	if d := now.Sub(a.at); d > 0 {
		a.tokens = min(capacity, a.tokens+d.Hours()*perHour)
	}
	a.at = now
	if a.tokens < 1 {
		return false
	}
	a.tokens--
	return true
}

// giveBack returns a load taken that did not happen.
func (a *allowance) giveBack(perHour float64) {
	if perHour > 0 {
		a.tokens++
	}
}

// SetRewarmsPerHour changes PoolOptions.RewarmsPerHour (the energy policy's
// allowance as the power state changes).
func (p *Pool) SetRewarmsPerHour(n float64) {
	p.mu.Lock()
	p.opts.RewarmsPerHour = n
	p.mu.Unlock()
}
