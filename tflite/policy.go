package tflite

// Eviction and keep-alive policies: which warm model leaves when the
// budget is short, and how long an idle one stays warm. The pool calls a
// Policy under its mutex, so a policy never blocks and its per-model state
// (Use.State) is guarded by the pool.

import (
	"fmt"
	"math"
	"time"
)

// Policy ranks warm models for eviction and sets their keep-alive. A
// Policy value belongs to one pool (it may keep state, such as GDSF's
// clock); make one per pool with NewPolicy.
type Policy interface {
	// Name is the name NewPolicy takes.
	Name() string
	// Requested notes a request for u's model at u.Now.
	Requested(u *Use)
	// Priority ranks a warm, evictable model: the lowest leaves first.
	Priority(u *Use) float64
	// Evicted notes that u's model left because the budget was short.
	Evicted(u *Use)
	// Window is when u's model should be warm.
	Window(u *Use) Window
}

// RewarmObserver is a Policy that learns from its rewarms' outcomes: the
// pool tells it when a background load warmed a model (Rewarmed) and when
// a model left memory for any reason (Dropped). A rewarmed model dropped
// before its next request (Requested) was a wasted load.
type RewarmObserver interface {
	Rewarmed(u *Use)
	Dropped(u *Use)
}

// Window is when a model should be warm, counted from its last request.
type Window struct {
	// KeepAlive: an idle model is freed this long after its last request;
	// 0 keeps it until the budget needs the room.
	KeepAlive time.Duration
	// Prewarm, with Rewarm, is when the model is wanted warm again: a cold
	// model (freed in the gap before it, or evicted for the budget) is
	// prewarmed from then until the keep-alive ends, if the room it needs
	// is held by models worth less. A gap > 0 frees the model right after
	// its request: it is not expected before.
	Prewarm time.Duration
	Rewarm  bool
}

// Use is what the pool knows of one model's use, as a Policy sees it.
type Use struct {
	ID    string
	Bytes int64         // held now (0 when cold)
	Cold  time.Duration // what the next cold start is expected to cost
	// Load is what a background load of it is expected to take: the cold
	// start and the warm-up invoke, spent whether or not a request comes.
	Load     time.Duration
	LastUsed time.Time // the latest request, release or load
	// LastRequest is the latest request (zero when never requested).
	LastRequest time.Time
	Now         time.Time
	Demand      float64 // requests, decayed with the pool's half-life, as of Now
	// State is the policy's own per-model state; the pool keeps it (and
	// moves it with the model on Promote) but never reads it.
	State any
}

// PolicyOptions tune NewPolicy.
type PolicyOptions struct {
	// TTL is the fixed keep-alive of "ttl", and the shortest of
	// "histogram"; 0 means 10 minutes, < 0 never frees an idle model.
	TTL time.Duration
	// MinSamples is how many idle times "histogram" needs before it trusts
	// a model's distribution; 0 means 5.
	MinSamples int
	// LatencyWeight is how many milliseconds of background load one
	// millisecond of a request's cold time is worth to "histogram" when it
	// weighs a rewarm (see rewarmPays); 0 means 2.
	LatencyWeight float64
}

// Policies are the names NewPolicy takes, the default first.
var Policies = []string{"histogram", "gdsf", "cost", "lru", "ttl"}

// DefaultPolicy is the policy of a pool given none (see the bench's
// policies section for why).
const DefaultPolicy = "histogram"

// NewPolicy makes a fresh policy by name ("" is DefaultPolicy):
//   - lru: the least recently used leaves first; no keep-alive.
//   - ttl: LRU order, and an idle model is freed after TTL.
//   - cost: decayed demand × cold time, per byte held; no aging.
//   - gdsf: Greedy-Dual-Size-Frequency (FaasCache, ASPLOS'21): priority =
//     clock + decayed demand × cold time / size; the clock rises to each
//     evicted priority, so popularity that stopped ages out.
//   - histogram: GDSF order, plus a keep-alive and pre-warm window per
//     model from its idle-time distribution ("Serverless in the Wild",
//     ATC'20), and rewarms of evicted models only where one is expected to
//     pay (see rewarmPays); models too new to trust keep TTL and are not
//     rewarmed.
func NewPolicy(name string, o PolicyOptions) (Policy, error) {
	switch {
	case o.TTL == 0:
		o.TTL = 10 * time.Minute
	case o.TTL < 0:
		o.TTL = 0 // Window.KeepAlive 0: until the budget needs the room
	}
	if o.MinSamples <= 0 {
		o.MinSamples = 5
	}
	if o.LatencyWeight <= 0 {
		o.LatencyWeight = 2
	}
	switch name {
	case "", DefaultPolicy:
		return &histogramPolicy{o: o}, nil
	case "gdsf":
		return &gdsfPolicy{}, nil
	case "cost":
		return costPolicy{}, nil
	case "lru":
		return lruPolicy{}, nil
	case "ttl":
		return ttlPolicy{ttl: o.TTL}, nil
	}
	return nil, fmt.Errorf("eviction policy %q: want one of %v", name, Policies)
}

// ParsePolicy checks a policy name.
func ParsePolicy(name string) error {
	_, err := NewPolicy(name, PolicyOptions{})
	return err
}

type lruPolicy struct{}

func (lruPolicy) Name() string            { return "lru" }
func (lruPolicy) Requested(*Use)          {}
func (lruPolicy) Evicted(*Use)            {}
func (lruPolicy) Priority(u *Use) float64 { return float64(u.LastUsed.UnixNano()) }
func (lruPolicy) Window(*Use) Window      { return Window{} }

type ttlPolicy struct {
	lruPolicy
	ttl time.Duration
}

func (ttlPolicy) Name() string         { return "ttl" }
func (p ttlPolicy) Window(*Use) Window { return Window{KeepAlive: p.ttl} }

// costPolicy: expected requests (with a floor, so unrequested prewarms
// still rank by cost) times the seconds each saves, per byte held.
type costPolicy struct{}

func (costPolicy) Name() string   { return "cost" }
func (costPolicy) Requested(*Use) {}
func (costPolicy) Evicted(*Use)   {}
func (costPolicy) Priority(u *Use) float64 {
	return (u.Demand + 0.05) * max(u.Cold.Seconds(), 1e-6) / float64(max(u.Bytes, 1))
}
func (costPolicy) Window(*Use) Window { return Window{} }

// gdsfPolicy keeps the clock; each model's State is the clock at its
// latest request (*float64).
type gdsfPolicy struct{ clock float64 }

func (*gdsfPolicy) Name() string { return "gdsf" }

func (p *gdsfPolicy) Requested(u *Use) {
	if c, ok := u.State.(*float64); ok {
		*c = p.clock
		return
	}
	c := p.clock
	u.State = &c
}

func (p *gdsfPolicy) Priority(u *Use) float64 {
	var at float64
	if c, ok := u.State.(*float64); ok {
		at = *c
	}
	return at + gdsfWorth(u)
}

func (p *gdsfPolicy) Evicted(u *Use) { p.clock = max(p.clock, p.Priority(u)) }

func (*gdsfPolicy) Window(*Use) Window { return Window{} }

// gdsfWorth is frequency × cost / size in seconds saved per MiB held (the
// unit only matters against the clock, which is made of the same terms).
func gdsfWorth(u *Use) float64 {
	return u.Demand * max(u.Cold.Seconds(), 1e-6) / (float64(max(u.Bytes, 1)) / (1 << 20))
}

// histogramPolicy is GDSF order with windows from each model's idle-time
// histogram ("Serverless in the Wild", ATC'20): keep-alive to the 99th
// percentile of idle times plus 10 % (never below TTL), pre-warm at the
// 5th percentile less 10 %. An evicted model is rewarmed while its window
// is open (see Pool.PrewarmDue for when that is worth it); a timer of a
// minute or more is freed in the gap before its pre-warm and ranks below
// everything there: it is not expected yet.
type histogramPolicy struct {
	o     PolicyOptions
	clock float64
}

// histState is a model's idle-time histogram and its rewarms' outcomes.
type histState struct {
	last  time.Time // the latest request
	clock float64
	idle  idleHistogram
	// rewarms the pool made of this model, and how many of them a request
	// used before the model left again; pending: the latest is unused yet.
	rewarms, rewarmHits int
	pending             bool
}

func (*histogramPolicy) Name() string { return "histogram" }

func (p *histogramPolicy) state(u *Use) *histState {
	s, ok := u.State.(*histState)
	if !ok {
		s = &histState{}
		u.State = s
	}
	return s
}

func (p *histogramPolicy) Requested(u *Use) {
	s := p.state(u)
	if s.pending {
		s.rewarmHits++
		s.pending = false
	}
	if !s.last.IsZero() {
		s.idle.add(u.Now.Sub(s.last))
	}
	s.last, s.clock = u.Now, p.clock
}

func (p *histogramPolicy) Priority(u *Use) float64 {
	s := p.state(u)
	// In the gap before its pre-warm window a model is not expected, and
	// the rewarm brings it back in time: it leaves first. A model that
	// will not be rewarmed (the rewarm does not pay) keeps its rank: the
	// next request would find it cold.
	if w := p.Window(u); w.Rewarm && w.Prewarm > 0 && u.Now.Sub(s.last) < w.Prewarm {
		return math.Inf(-1)
	}
	return s.clock + histogramWorth(u)
}

// histogramWorth is gdsfWorth with the size counted to the power 1.5: a
// large model's load displaces several smaller ones, and each of those is
// another miss later, so holding it costs more than its share of bytes.
// Simulated over three zoos × seven traces (three Azure-format, four
// generated shapes) × 25/50/75 % budgets, the power 1.5 did better
// against LRU than 1 in 51 of 63 cells on cold time and 49 on total
// load work; 0, 0.5 and 2 did worse than 1.5 on the first zoo (see
// docs/eviction.md).
func histogramWorth(u *Use) float64 {
	mib := float64(max(u.Bytes, 1)) / (1 << 20)
	return u.Demand * max(u.Cold.Seconds(), 1e-6) / (mib * math.Sqrt(mib))
}

func (p *histogramPolicy) Evicted(u *Use) {
	if pr := p.Priority(u); !math.IsInf(pr, 0) {
		p.clock = max(p.clock, pr)
	}
}

// Rewarmed notes a background load of u's model.
func (p *histogramPolicy) Rewarmed(u *Use) {
	s := p.state(u)
	s.rewarms++
	s.pending = true
}

// Dropped notes that u's model left memory: a pending rewarm was wasted.
func (p *histogramPolicy) Dropped(u *Use) { p.state(u).pending = false }

// rewarmPays says whether rewarming u's model is expected to pay: P(a
// request comes inside the keep-alive) × P(it comes before the model is
// evicted again) × the cold time that request would pay, weighted by
// LatencyWeight, against the load it costs. The first factor is the
// share of the model's idle times within keep; the second is the hit rate
// of its own rewarms so far (a rewarm dropped before any request is
// waste), starting from one hit in one: a model is rewarmed until its
// rewarms are seen wasted. A rewarm costs a whole load and a hit saves at
// most the cold start a request would have paid, so unweighted no rewarm
// ever pays in load work: the weight says how much more a millisecond on
// a request's path is worth than one off it.
func (p *histogramPolicy) rewarmPays(u *Use, s *histState, keep time.Duration) bool {
	within := 1.0
	if keep > 0 {
		within = s.idle.cdf(keep)
	}
	hit := (float64(s.rewarmHits) + 1) / (float64(s.rewarms) + 1)
	return within*hit*p.o.LatencyWeight*u.Cold.Seconds() > u.Load.Seconds()
}

func (p *histogramPolicy) Window(u *Use) Window {
	s := p.state(u)
	if s.idle.n < p.o.MinSamples {
		return Window{KeepAlive: p.o.TTL}
	}
	p99 := time.Duration(float64(s.idle.quantile(0.99, true)) * 1.1)
	w := Window{Rewarm: true, KeepAlive: max(p99, p.o.TTL),
		Prewarm: time.Duration(float64(s.idle.quantile(0.05, false)) * 0.9)}
	if p.o.TTL == 0 {
		w.KeepAlive = 0 // never freed for being idle
	}
	// A rewarm holds the load slot for the model's cold time: worth it
	// only when that is short against the model's usual idle time (on an
	// SD card a large model's reload takes seconds, and requests for
	// other models would wait behind it).
	w.Rewarm = u.Cold <= s.idle.quantile(0.5, true)/4 && p.rewarmPays(u, s, w.KeepAlive)
	if w.Prewarm < minPrewarmGap || w.Prewarm < p99/2 {
		// Too short a gap to be worth freeing and reloading, or idle times
		// too spread (a random, not a timed, caller): the model stays warm
		// after a request and is rewarmed at once if evicted.
		w.Prewarm = 0
	}
	return w
}

// minPrewarmGap is the shortest gap worth freeing a model for: below it
// the reload churn costs more than the memory is worth.
const minPrewarmGap = time.Minute

// idleHistogram counts idle times in bins a factor √2 apart from 50 ms
// (bin 0 holds everything shorter) to days.
type idleHistogram struct {
	bins [idleBins]uint32
	n    int
}

const (
	idleBins  = 56
	idleFirst = 50 * time.Millisecond
)

// idleEdge is the lower edge of bin i (i ≥ 1).
func idleEdge(i int) time.Duration {
	return time.Duration(float64(idleFirst) * math.Pow(math.Sqrt2, float64(i-1)))
}

func (h *idleHistogram) add(d time.Duration) {
	i := 0
	if d >= idleFirst {
		i = min(1+int(2*math.Log2(float64(d)/float64(idleFirst))), idleBins-1)
	}
	h.bins[i]++
	h.n++
}

// cdf is the share of idle times in the bins wholly below d.
func (h *idleHistogram) cdf(d time.Duration) float64 {
	if h.n == 0 {
		return 0
	}
	seen := 0
	for i, c := range h.bins {
		if idleEdge(i+1) > d {
			break
		}
		seen += int(c)
	}
	return float64(seen) / float64(h.n)
}

// quantile is the upper (or lower) edge of the bin holding quantile q.
func (h *idleHistogram) quantile(q float64, upper bool) time.Duration {
	want := max(1, int(math.Ceil(q*float64(h.n))))
	seen := 0
	for i, c := range h.bins {
		seen += int(c)
		if seen < want {
			continue
		}
		switch {
		case upper:
			return idleEdge(i + 1)
		case i == 0:
			return 0
		default:
			return idleEdge(i)
		}
	}
	return idleEdge(idleBins)
}
