package tflite

import "context"

// LoadSlotForTest exposes the pool's load slot to the external tests.
type LoadSlotForTest struct{ s loadSlot }

func (l *LoadSlotForTest) Acquire(ctx context.Context, cost int64) error {
	return l.s.acquire(ctx, cost)
}
func (l *LoadSlotForTest) Release() { l.s.release() }
func (l *LoadSlotForTest) Waiting() int {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	return len(l.s.waiters)
}

// RoomWaitersForTest is how many loads wait for room in p's budget.
var RoomWaitersForTest = roomWaiters

// DropCacheForTest drops f's unmapped pages from the page cache.
var DropCacheForTest = dropCache
