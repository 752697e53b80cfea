package slot

import (
	"context"
	"slices"
	"sync"
)

// Slot is held by one at a time; when several wait, the cheapest goes
// first (shortest job first): after a boot with every model asked at once,
// the small ones are served in milliseconds instead of queueing behind the
// large ones, and the last is served no later. The pool loads models
// through one (tflite), the agent registers model files through another.
//
// Cheapest first alone lets a steady stream of small jobs starve a large
// one, so waiting ages a job: each time another waiter is served before
// it, its cost counts half (cost >> passed). A job passed over k times
// goes before any newcomer more than 2^-k as costly, so a large job waits
// behind at most about log2(its cost / theirs) smaller ones. Aging counts
// hand-overs, not time: the order stays deterministic. The zero Slot is
// free.
type Slot struct {
	// mu guards held, grants and waiters.
	mu      sync.Mutex
	held    bool
	grants  uint64 // times the slot was taken, ever
	waiters []*waiter
}

type waiter struct {
	cost   int64
	passed int           // waiters served before this one (its age)
	ready  chan struct{} // closed when the slot is handed over
}

// Acquire takes the slot, waiting behind cheaper jobs, until ctx ends.
func (s *Slot) Acquire(ctx context.Context, cost int64) error {
	s.mu.Lock()
	if !s.held {
		s.held = true
		s.grants++
		s.mu.Unlock()
		return nil
	}
	w := &waiter{cost: cost, ready: make(chan struct{})}
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
		s.Release() // handed over just as ctx ended: pass it on
		return ctx.Err()
	}
}

// Release hands the slot to the waiter cheapest after aging (the earliest
// among equals), or frees it.
func (s *Slot) Release() {
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
func (w *waiter) aged() int64 { return w.cost >> min(w.passed, 62) }

// Activity is a reading of the slot: a measurement between two equal
// readings, both idle, ran beside no holder.
func (s *Slot) Activity() (grants uint64, busy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants, s.held
}

// Busy reports whether someone holds the slot now (advisory: it may
// change right after).
func (s *Slot) Busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// Waiting is how many wait for the slot now.
func (s *Slot) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters)
}
