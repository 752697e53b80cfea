package agent

import (
	"sync"
	"time"

	"github.com/edge-agent/edge-agent/storage"
)

// usageBatch collects requests in memory; they are written to the state
// in one transaction a minute (and at shutdown), not one per request.
// Requests to one model within one hour are one event (the history is
// per hour), so the batch stays small while the state cannot be written:
// models × hours of the outage, and at most maxPendingUsage events.
type usageBatch struct {
	// mu guards events, index and dropped.
	mu      sync.Mutex
	events  []storage.UsageEvent
	index   map[usageKey]int // into events
	dropped int
}

type usageKey struct {
	model string
	hour  int64
}

// maxPendingUsage bounds the batch; past it the oldest hours are dropped.
const maxPendingUsage = 4096

func (u *usageBatch) record(model string, at time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.addLocked(model, at, 1)
}

func (u *usageBatch) addLocked(model string, at time.Time, n float64) {
	k := usageKey{model, at.Unix() / 3600}
	if i, ok := u.index[k]; ok {
		u.events[i].N += n
		return
	}
	if len(u.events) >= maxPendingUsage {
		u.events = append(u.events[:0], u.events[1:]...)
		u.dropped++
		u.reindex()
	}
	if u.index == nil {
		u.index = map[usageKey]int{}
	}
	u.index[k] = len(u.events)
	u.events = append(u.events, storage.UsageEvent{Model: model, At: at, N: n})
}

func (u *usageBatch) reindex() {
	u.index = make(map[usageKey]int, len(u.events))
	for i, e := range u.events {
		u.index[usageKey{e.Model, e.At.Unix() / 3600}] = i
	}
}

func (u *usageBatch) pending() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.events)
}

func (u *usageBatch) flush(s *storage.Store) error {
	u.mu.Lock()
	ev := u.events
	u.events, u.index = nil, nil
	u.mu.Unlock()
	if err := s.AddUsage(ev); err != nil {
		u.mu.Lock()
		for _, e := range ev { // kept for the next try, merged again
			u.addLocked(e.Model, e.At, e.N)
		}
		u.mu.Unlock()
		return err
	}
	return nil
}
