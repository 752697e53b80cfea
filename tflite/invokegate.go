package tflite

import (
	"slices"
	"sync"
	"time"
)

// invokeGate orders the invokes that contend for the cores. Without it,
// every leased interpreter invokes at once with all its threads: after a
// boot with six models asked together, twelve threads share two cores, the
// kernels' spinning threads steal from each other, and every model answers
// late, the small ones about as late as the large (measured here:
// mobilenet_v2 answered after 208–400 ms where it needs 60 alone). With the
// gate, invokes run while their threads fit the cores, the cheapest waiting
// one goes next, and each model answers about when shortest-job-first
// says: never later than under processor sharing, by the textbook
// argument, and, with the spinning gone, the last one sooner too (six
// models one after another took 371 ms against 439 all at once).
//
// A request's load announces its invoke (expect): an invoke many times as
// costly does not start while a much cheaper one is loading on its way,
// as the gate cannot stop an invoke once it runs. After a boot the large
// model's load is often done first; without this it took the cores for
// its 250 ms first invoke just before mobilenet_v2's 40 ms one arrived.
//
// Three rules keep it from costing what it saves:
//   - a very short invoke does not wait behind a long one: one expected to
//     take at most 1/16 of what every running invoke has left joins them
//     at once. Only so short: two invokes that each spin two threads on two
//     cores run far slower than one after the other (mobilenet_v2 beside
//     deeplabv3 took 238 ms, alone 40);
//   - cheapest-first ages as the load slot does (each waiter served before
//     one halves its cost), so a stream of small invokes does not starve a
//     large one;
//   - no invoke waits longer than maxWait: an invoke that hangs (a stuck
//     delegate) delays the others once by that much, and never stops them.
type invokeGate struct {
	cores   int
	maxWait time.Duration

	// mu guards used, running and waiters.
	mu       sync.Mutex
	used     int // threads of the running invokes
	running  []*gateTurn
	waiters  []*gateTurn
	expected []*gateNotice
}

// gateNotice is an invoke on its way: its model is loading for a request.
type gateNotice struct{ cost time.Duration }

// gateTurn is one invoke's passage through the gate.
type gateTurn struct {
	cost    time.Duration // expected length (0: not known)
	threads int
	started time.Time
	passed  int           // waiters served before this one (its age)
	ready   chan struct{} // closed when it may run (waiters only)
}

// shortShare is how small against the running invokes' remaining time an
// invoke must be to join them at once, and against a waiting invoke an
// expected one must be to hold it back.
const shortShare = 16

func newInvokeGate(cores int, maxWait time.Duration) *invokeGate {
	return &invokeGate{cores: cores, maxWait: maxWait}
}

// expect announces an invoke of cost on its way (a request's load); enter
// or forget takes the notice back. A nil gate ignores it.
func (g *invokeGate) expect(cost time.Duration) *gateNotice {
	if g == nil {
		return nil
	}
	n := &gateNotice{cost: cost}
	g.mu.Lock()
	g.expected = append(g.expected, n)
	g.mu.Unlock()
	return n
}

// forget takes back notice n (the load failed, or the lease was released
// without an invoke); an invoke it held back may run now.
func (g *invokeGate) forget(n *gateNotice) {
	if g == nil || n == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.forgetLocked(n)
	g.dispatchLocked()
}

func (g *invokeGate) forgetLocked(n *gateNotice) {
	if i := slices.Index(g.expected, n); i >= 0 {
		g.expected = slices.Delete(g.expected, i, i+1)
	}
}

// enter waits until an invoke of cost with threads may run (taking back
// its notice, if it announced itself); pass the turn to leave when the
// invoke returns. A nil gate admits everything.
func (g *invokeGate) enter(cost time.Duration, threads int, n *gateNotice) *gateTurn {
	if g == nil {
		return nil
	}
	t := &gateTurn{cost: cost, threads: min(max(threads, 1), g.cores)}
	g.mu.Lock()
	g.forgetLocked(n)
	if (len(g.waiters) == 0 && g.fitsLocked(t) && !g.heldBackLocked(t)) || g.shortLocked(t) {
		g.startLocked(t)
		g.mu.Unlock()
		return t
	}
	t.ready = make(chan struct{})
	g.waiters = append(g.waiters, t)
	g.dispatchLocked() // t may be the one to go (others wait held back)
	g.mu.Unlock()
	timer := time.NewTimer(g.maxWait)
	defer timer.Stop()
	select {
	case <-t.ready:
	case <-timer.C:
		g.mu.Lock()
		if i := slices.Index(g.waiters, t); i >= 0 {
			// Past maxWait it runs beside whatever holds the cores.
			g.waiters = slices.Delete(g.waiters, i, i+1)
			g.startLocked(t)
		}
		g.mu.Unlock()
	}
	return t
}

// leave ends t's invoke and lets the waiters that now fit run, cheapest
// (after aging) first.
func (g *invokeGate) leave(t *gateTurn) {
	if g == nil || t == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if i := slices.Index(g.running, t); i >= 0 {
		g.running = slices.Delete(g.running, i, i+1)
		g.used -= t.threads
	}
	g.dispatchLocked()
}

// dispatchLocked lets the waiters that may run now go.
func (g *invokeGate) dispatchLocked() {
	for len(g.waiters) > 0 {
		best := 0
		for i, w := range g.waiters {
			if w.aged() < g.waiters[best].aged() {
				best = i
			}
		}
		if !g.fitsLocked(g.waiters[best]) || g.heldBackLocked(g.waiters[best]) {
			// No room for the next in order; one short enough to join
			// what runs may still go (each waiter is asked afresh: what
			// runs now may be nearer its end than when it arrived).
			best = slices.IndexFunc(g.waiters, g.shortLocked)
			if best < 0 {
				return
			}
		}
		w := g.waiters[best]
		g.waiters = slices.Delete(g.waiters, best, best+1)
		for _, o := range g.waiters {
			o.passed++
		}
		g.startLocked(w)
		close(w.ready)
	}
}

// heldBackLocked reports whether a much cheaper invoke is on its way: t
// waits for it (bounded by maxWait, as any wait).
func (g *invokeGate) heldBackLocked(t *gateTurn) bool {
	for _, n := range g.expected {
		if n.cost > 0 && n.cost*shortShare <= t.cost {
			return true
		}
	}
	return false
}

func (g *invokeGate) fitsLocked(t *gateTurn) bool {
	return g.used == 0 || g.used+t.threads <= g.cores
}

// shortLocked reports whether t is short enough to join the running
// invokes at once: a known cost, at most 1/shortShare of what each of
// them has left (never counted below a quarter of its own cost, so an
// overdue invoke is not taken for one about to end).
func (g *invokeGate) shortLocked(t *gateTurn) bool {
	if t.cost <= 0 || len(g.running) == 0 {
		return false
	}
	now := time.Now()
	for _, r := range g.running {
		left := max(r.cost-now.Sub(r.started), r.cost/4)
		if t.cost*shortShare > left {
			return false
		}
	}
	return true
}

func (g *invokeGate) startLocked(t *gateTurn) {
	t.started = time.Now()
	g.used += t.threads
	g.running = append(g.running, t)
}

// aged is the cost the waiter is ordered by: halved for each waiter
// served before it.
func (t *gateTurn) aged() time.Duration { return t.cost >> min(t.passed, 62) }
