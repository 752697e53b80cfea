package tflite

import (
	"os"
)

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
