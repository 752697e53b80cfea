package agent

import (
	"context"
	"time"

	"github.com/edge-agent/edge-agent/power"
)

// The planner's loops, started as tuned loops (a reload that changes their
// settings restarts them): the schedule and the resume detector post
// wakes; trim and keep-alive keep the pool to what is worth holding.

// scheduleLoop wakes ahead of hours in which the usage history predicts
// demand for a model that is not warm; at most once an hour.
func (p *wakePlanner) scheduleLoop(ctx context.Context) {
	lead, minDemand := p.config().Prewarm.ScheduleLead, p.config().Prewarm.ScheduleMinDemand
	if lead <= 0 {
		return
	}
	var woke time.Time // the hour last woken for
	p.loop(ctx, "schedule", p.scheduleEvery, nil, func() {
		if ctx.Err() != nil {
			return
		}
		now := p.now()
		next := now.Truncate(time.Hour).Add(time.Hour)
		if next.Sub(now) > lead || next.Equal(woke) {
			return
		}
		usage, err := p.store().Usage()
		if err != nil {
			return
		}
		for id, u := range usage {
			if u.Expected(next, now, p.store().UsageHalfLife()) >= minDemand && !p.pool().IsWarm(id) {
				woke = next
				p.post("schedule")
				return
			}
		}
	})
}

// trimLoop frees what was not used for the keep-alive.
func (p *wakePlanner) trimLoop(ctx context.Context) {
	ka := p.config().Prewarm.KeepAlive
	if ka <= 0 {
		return
	}
	keep := p.config().Prewarm.KeepMapping == nil || *p.config().Prewarm.KeepMapping
	p.loop(ctx, "trim", max(ka/4, time.Second), nil, func() {
		if ctx.Err() != nil {
			return
		}
		if n := p.pool().Trim(ka, keep); n > 0 {
			p.log.Info("trimmed idle interpreters", "freed", n, "keep_alive", ka)
		}
	})
}

// keepAliveLoop applies the eviction policy's windows every second, and
// right after a request that loaded (kickRewarm): it frees what the
// policy no longer keeps warm and rewarms the models it expects
// (histogram: a timer's pre-warm window, a model evicted while requests
// for it are still expected), when the energy policy allows a full
// prewarm. A rewarm only takes room from models worth less.
func (p *wakePlanner) keepAliveLoop(ctx context.Context) {
	pool := p.pool()
	p.loop(ctx, "keep-alive", time.Second, p.rewarmKick, func() {
		if n := pool.Expire(); n > 0 {
			p.log.Debug("keep-alive freed models", "freed", n)
		}
		due := pool.DuePrewarms()
		if len(due) == 0 {
			return
		}
		al := p.config().policy().Allow(p.power().Read(), nil)
		if al.Mode != power.ModeAll && al.Mode != power.ModeTopK {
			return
		}
		pool.SetRewarmsPerHour(rewarmsPerHour(al.Mode))
		for _, id := range due {
			if ctx.Err() != nil {
				return
			}
			rep, loaded, err := pool.PrewarmDue(ctx, id)
			switch {
			case err != nil:
				p.log.Warn("rewarm failed", "model", id, "err", err)
			case loaded:
				p.log.Info("rewarmed", "model", id, "cold_ms", ms(rep.Stages.Cold()))
			}
		}
	})
}

// Rewarm allowances per hour by the energy policy's mode: on external
// power the policy's own payoff test decides and this only stops a
// runaway; on battery a fifth of that (each load is CPU-seconds of charge).
const (
	rewarmsPerHourAC      = 60
	rewarmsPerHourBattery = 12
)

func rewarmsPerHour(m power.Mode) float64 {
	if m == power.ModeAll {
		return rewarmsPerHourAC
	}
	return rewarmsPerHourBattery
}

// kickRewarm runs the keep-alive loop now (never blocks): a request that
// loaded may have pushed out models still expected, and the sooner they
// are back the likelier they are warm for their next request.
func (p *wakePlanner) kickRewarm() {
	select {
	case p.rewarmKick <- struct{}{}:
	default:
	}
}

// resumeLoop posts a wake when the machine resumed from suspend.
func (p *wakePlanner) resumeLoop(ctx context.Context) {
	every := p.config().Prewarm.ResumeCheck
	if every <= 0 {
		return
	}
	d := power.NewResumeDetector(p.clock, 0)
	p.loop(ctx, "resume", every, nil, func() {
		if ctx.Err() != nil {
			return
		}
		if slept, ok := d.Check(); ok {
			p.log.Info("resumed from suspend", "slept", slept)
			p.post("resume")
		}
	})
}
