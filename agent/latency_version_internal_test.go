package agent

import (
	"testing"
	"time"
)

// An interval in which two versions answered (an update) is split by
// version, so the old version's last requests do not blur the new one's
// first; an interval with one version is not.
func TestLatencyIntervalByVersion(t *testing.T) {
	l := newLatencies(time.Now())
	l.observe("m", "v1", true, false, 100*time.Millisecond, time.Millisecond)
	l.observe("m", "v2", true, false, 10*time.Millisecond, time.Millisecond)
	l.observe("m", "v2", true, false, 10*time.Millisecond, time.Millisecond)
	iv := l.snapshot(time.Now(), true)["m"].Interval
	if iv.Requests != 3 || len(iv.ByVersion) != 2 || iv.ByVersion["v1"].Requests != 1 || iv.ByVersion["v2"].Requests != 2 {
		t.Fatalf("interval across an update: %+v", iv)
	}
	if v1, v2 := iv.ByVersion["v1"].E2EMs.P50, iv.ByVersion["v2"].E2EMs.P50; v1 <= v2 {
		t.Fatalf("by version: v1 p50 %v, v2 p50 %v", v1, v2)
	}
	l.observe("m", "v2", true, false, 10*time.Millisecond, time.Millisecond)
	if iv := l.snapshot(time.Now(), true)["m"].Interval; iv.ByVersion != nil {
		t.Fatalf("one version answered, yet split: %+v", iv)
	}
}
