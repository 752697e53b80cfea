package agent

import (
	"testing"
	"time"
)

// While the state cannot be written the batch merges requests per model
// and hour and stays bounded.
func TestUsageBatchBounded(t *testing.T) {
	var u usageBatch
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for i := range 10000 {
		u.record([]string{"a", "b"}[i%2], t0.Add(time.Duration(i)*time.Second))
	}
	// 10000 s span 3 hours: 2 models × 3 hours.
	if n := u.pending(); n != 6 {
		t.Fatalf("%d events pending", n)
	}
	var total float64
	for _, e := range u.events {
		total += e.N
	}
	if total != 10000 {
		t.Fatalf("requests counted %v", total)
	}
	for i := range 2 * maxPendingUsage {
		u.record("c", t0.Add(time.Duration(i)*time.Hour))
	}
	if n := u.pending(); n != maxPendingUsage || u.dropped == 0 {
		t.Fatalf("%d pending, %d dropped", n, u.dropped)
	}
}
