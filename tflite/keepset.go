package tflite

// The keep set: which models are worth holding warm together, for a
// policy that holds one (histogram). Ranking models one by one, by value
// per byte, lets a large model asked for now and then take the room of two
// smaller ones worth more together, and a request for a model outside the
// set displaces members that were worth keeping. The pool works out the
// set (a 0/1 knapsack over the budget) on every maintenance tick, and
// rewarms its members into the room of models outside it.

import (
	"sort"
	"time"
)

// keeper is a Policy that holds a keep set warm. The pool marks the
// models outside the set (Use.Outsider) for the policy's Priority, lets a
// member's rewarm take the room of models outside it, and tries a
// displaced member again until it is back (re-arming).
type keeper interface {
	// Worth is what u's model saves by staying warm (its decayed requests
	// that would find it cold × its cold time, in seconds): what the
	// knapsack weighs.
	Worth(u *Use) float64
	// Spare reports whether u's model, outside the set, keeps its room
	// against a member's rewarm: it is likely asked for again first (in
	// the middle of a burst).
	Spare(u *Use) bool
}

// Re-arming: a member of the keep set whose reload is short is tried
// again at most every rearmEvery × its cold time (and a second) while it
// is cold, not only once per request: the rewarms then hold at most a
// tenth of the load slot. A longer reload (slow storage, a large model)
// holds the slot for seconds with requests waiting behind it: it is tried
// once per request, as any model due.
const (
	rearmMaxCold = 100 * time.Millisecond
	rearmEvery   = 10
)

// keepSetLocked is the knapsack-best set of models to hold warm together:
// each registered, unpinned model's value is the keeper's Worth, its
// weight its footprint (in units of a MiB, or of a 1024th of the budget
// when that is more, rounded up), the capacity the budget less what
// pinned models need. It runs under mu every tick: the unit bounds its
// work to 1024 × the models.
func (p *Pool) keepSetLocked(k keeper, now time.Time) map[*entry]bool {
	type item struct {
		e *entry
		w int
		v float64
	}
	unit := max(1<<20, p.opts.Budget>>10)
	capacity := int(p.opts.Budget / unit)
	var items []item
	for _, e := range p.entries {
		if e.removed {
			continue
		}
		w := int((e.fileSize + e.knownHeap + unit - 1) / unit)
		if e.spec.Pinned {
			capacity -= w
			continue
		}
		if v := k.Worth(p.expectedUseLocked(e, now)); v > 0 {
			items = append(items, item{e, w, v})
		}
	}
	if capacity <= 0 || len(items) == 0 {
		return nil
	}
	// Map order would break ties differently from run to run.
	sort.Slice(items, func(i, j int) bool { return items[i].e.spec.ID < items[j].e.spec.ID })
	best := make([]float64, capacity+1)
	took := make([][]bool, len(items))
	for i, it := range items {
		took[i] = make([]bool, capacity+1)
		for b := capacity; b >= it.w; b-- {
			if v := best[b-it.w] + it.v; v > best[b] {
				best[b], took[i][b] = v, true
			}
		}
	}
	keep := map[*entry]bool{}
	for i, b := len(items)-1, capacity; i >= 0; i-- {
		if took[i][b] {
			keep[items[i].e] = true
			b -= items[i].w
		}
	}
	return keep
}

// refreshKeepSetLocked recomputes the keep set, for a policy that holds
// one.
func (p *Pool) refreshKeepSetLocked(now time.Time) {
	if k, ok := p.opts.Policy.(keeper); ok && p.opts.Budget > 0 {
		p.keep = p.keepSetLocked(k, now)
	}
}

// rearmedLocked reports whether e, a cold member of the keep set, is due
// another rewarm although one was tried since its latest request.
func (p *Pool) rearmedLocked(e *entry, now time.Time) bool {
	return p.keep[e] && e.cold <= rearmMaxCold && now.Sub(e.prewarmedAt) >= max(time.Second, rearmEvery*e.cold)
}

// makeRoomFromOutsidersLocked makes room for a rewarm of e, a member of
// the keep set, from models outside the set only, in the policy's order,
// and reports whether that was enough; if not, nothing leaves. An outsider
// the policy spares (in a burst) keeps its room.
func (p *Pool) makeRoomFromOutsidersLocked(need int64, e *entry, now time.Time) bool {
	k, ok := p.opts.Policy.(keeper)
	if !ok || !p.keep[e] || e.cold > rearmMaxCold {
		return false
	}
	spared := map[*entry]bool{}
	for _, m := range p.entries {
		if m.model != nil && (p.keep[m] || k.Spare(p.useLocked(m, now))) {
			spared[m] = true
		}
	}
	var victims []*entry
	var freed int64
	for p.bytes-freed+need > p.opts.Budget {
		v, _ := p.victimLocked(e, spared)
		if v == nil {
			return false
		}
		spared[v] = true
		victims = append(victims, v)
		freed += v.bytes
	}
	for _, v := range victims {
		p.evictLocked(v, "budget")
	}
	return true
}
