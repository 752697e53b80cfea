package agent

import (
	"sync"
	"time"

	"github.com/edge-agent/edge-agent/agent/metrics"
	"github.com/edge-agent/edge-agent/agent/observe"
)

// What the agent learns from each finished request. serve.go hands one
// observe.RequestDone to this list and knows none of its members. The
// order is fixed here: readiness first (a failed load marks the model),
// then the update guard and parity ring, usage, and last the request
// record, in which the wake tracker decides "first after a wake" before
// the latency record reads it (one observer, so that order cannot drift).
func (a *Agent) requestObservers() observe.List {
	return observe.List{
		loadObserver{note: a.ready.noteLoad, rewarm: a.planner.kickRewarm},
		a.upd,
		usageObserver{record: a.tel.usage.record, precise: a.preciseVariant, now: a.opts.Now},
		requestRecorder{wake: a.wake, lat: a.tel.lat, prom: a.tel.prom, event: a.tel.eventLater},
	}
}

// loadObserver keeps readiness current with each request's load: a failed
// load marks the model failed, a successful one clears it; and a request
// that loaded may have pushed out what is wanted back, so the keep-alive
// loop is kicked.
type loadObserver struct {
	note   func(model string, err error)
	rewarm func()
}

func (o loadObserver) RequestDone(d observe.RequestDone) {
	switch {
	case d.Stage == observe.StageLoad:
		o.note(d.Model, d.Err)
	case d.Loaded:
		o.note(d.Model, nil)
		o.rewarm()
	}
}

// usageObserver records demand for models, never family ids (the planner
// and the schedule rank models): for the variant that ran, and for the
// family's precise variant when a faster one stood in for it, since that
// is the one the next wake should have warm.
type usageObserver struct {
	record  func(model string, at time.Time)
	precise func(family string) (string, bool)
	now     func() time.Time
}

func (o usageObserver) RequestDone(d observe.RequestDone) {
	if d.Err != nil {
		return
	}
	now := o.now()
	o.record(d.Model, now)
	if d.Family == "" {
		return
	}
	if p, ok := o.precise(d.Family); ok && p != d.Model {
		o.record(p, now)
	}
}

// preciseVariant is a family's most precise variant.
func (a *Agent) preciseVariant(family string) (string, bool) {
	f, ok := a.config().family(family)
	if !ok {
		return "", false
	}
	return f.Variants[len(f.Variants)-1], true
}

// requestRecorder records an answered request: the wake tracker (the first
// request for each asked id after a wake, with an event), then its
// latencies (MQTT metrics and status, and Prometheus when it is on). It
// runs before the request is answered, so the event goes to the event
// writer (eventLater): written here, its outbox commit (an fsync) held
// the first answer after every wake by 2–20 ms.
type requestRecorder struct {
	wake  *wakeTracker
	lat   *metrics.Latencies
	prom  *metrics.Prom // nil when off
	event func(kind string, fields map[string]any)
}

func (o requestRecorder) RequestDone(d observe.RequestDone) {
	if d.Err != nil {
		return
	}
	first := o.wake.first(d.Asked)
	if first {
		o.event("first_request", map[string]any{"model": d.Asked, "warm": !d.Loaded})
	}
	o.lat.Observe(d.Answered, d.AnsweredVersion, d.Warm, first, d.E2E, d.Invoke)
	o.prom.Observe(d.Answered, d.Warm, d.Transport, d.E2E, d.Invoke)
}

// wakeTracker knows which ids were asked for since the last wake.
type wakeTracker struct {
	mu   sync.Mutex
	seen map[string]bool
}

func newWakeTracker() *wakeTracker { return &wakeTracker{seen: map[string]bool{}} }

// first marks id asked and says whether it is the first time since the
// last wake.
func (w *wakeTracker) first(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := !w.seen[id]
	w.seen[id] = true
	return f
}

// woke starts a new wake: first requests count from here.
func (w *wakeTracker) woke() {
	w.mu.Lock()
	w.seen = map[string]bool{}
	w.mu.Unlock()
}
