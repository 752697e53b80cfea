package tflite

import (
	"context"
	"os"
)

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

// ResidencyBothWaysForTest counts f's cached bytes with cachestat and with
// mincore; ok is false when the kernel has no cachestat.
func ResidencyBothWaysForTest(f *os.File, size int64) (viaCachestat, viaMincore int64, ok bool, err error) {
	viaCachestat, ok = cachestatResident(f, size)
	viaMincore, err = mincoreResident(f, size)
	return viaCachestat, viaMincore, ok, err
}
