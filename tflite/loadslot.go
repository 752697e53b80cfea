package tflite

import (
	"context"
	"slices"
	"sync"
)

// loadSlot is the pool's one slot for loading: heap measurements must not
// mix, and two cold loads on a small board only slow each other. When
// several loads wait, the cheapest goes first (shortest job first): after
// a boot with every model asked at once, the small ones answer in
// milliseconds instead of queueing behind the large ones, and the last
// answer comes no later.
//
// Cheapest first alone lets a steady stream of small loads starve a large
// one, so waiting ages a load: each time another waiter is served before
// it, its cost counts half (cost >> passed). A load passed over k times
// goes before any newcomer more than 2^-k as costly, so a large load waits
// behind at most about log2(its cost / theirs) smaller ones. Aging counts
// hand-overs, not time: the order stays deterministic.
type loadSlot struct {
	// mu guards held, grants and waiters.
	mu      sync.Mutex
	held    bool
	grants  uint64 // times the slot was taken, ever
	waiters []*slotWaiter
}

type slotWaiter struct {
	cost   int64
	passed int           // waiters served before this one (its age)
	ready  chan struct{} // closed when the slot is handed over
}

// acquire takes the slot, waiting behind cheaper loads, until ctx ends.
func (s *loadSlot) acquire(ctx context.Context, cost int64) error {
	s.mu.Lock()
	if !s.held {
		s.held = true
		s.grants++
		s.mu.Unlock()
		return nil
	}
	w := &slotWaiter{cost: cost, ready: make(chan struct{})}
	s.waiters = append(s.waiters, w)
	s.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		if i := slices.Index(s.waiters, w); i >= 0 {
			s.waiters = slices.Delete(s.waiters, i, i+1)
			s.mu.Unlock()
			return ctx.Err()
		}
		s.mu.Unlock()
		s.release() // handed over just as ctx ended: pass it on
		return ctx.Err()
	}
}

// release hands the slot to the waiter cheapest after aging (the earliest
// among equals), or frees it.
func (s *loadSlot) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiters) == 0 {
		s.held = false
		return
	}
	best := 0
	for i, w := range s.waiters {
		if w.aged() < s.waiters[best].aged() {
			best = i
		}
	}
	w := s.waiters[best]
	s.waiters = slices.Delete(s.waiters, best, best+1)
	for _, o := range s.waiters {
		o.passed++
	}
	s.grants++
	close(w.ready)
}

// aged is the cost the waiter is ordered by: halved for each waiter
// served before it.
func (w *slotWaiter) aged() int64 { return w.cost >> min(w.passed, 62) }

// activity is a reading of the slot: a measurement between two equal
// readings, both idle, ran beside no load (or reservation).
func (s *loadSlot) activity() (grants uint64, busy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants, s.held
}

// busy reports whether a load holds the slot now (advisory: it may change
// right after).
func (s *loadSlot) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}
