package metrics

import (
	"testing"
	"time"
)

// An interval in which two versions answered (an update) is split by
// version, so the old version's last requests do not blur the new one's
// first; an interval with one version is not.
func TestLatencyIntervalByVersion(t *testing.T) {
	l := NewLatencies(time.Now())
	l.Observe("m", "v1", true, false, 100*time.Millisecond, time.Millisecond)
	l.Observe("m", "v2", true, false, 10*time.Millisecond, time.Millisecond)
	l.Observe("m", "v2", true, false, 10*time.Millisecond, time.Millisecond)
	iv := l.Snapshot(time.Now(), true)["m"].Interval
	if iv.Requests != 3 || len(iv.ByVersion) != 2 || iv.ByVersion["v1"].Requests != 1 || iv.ByVersion["v2"].Requests != 2 {
		t.Fatalf("interval across an update: %+v", iv)
	}
	if v1, v2 := iv.ByVersion["v1"].E2EMs.P50, iv.ByVersion["v2"].E2EMs.P50; v1 <= v2 {
		t.Fatalf("by version: v1 p50 %v, v2 p50 %v", v1, v2)
	}
	l.Observe("m", "v2", true, false, 10*time.Millisecond, time.Millisecond)
	if iv := l.Snapshot(time.Now(), true)["m"].Interval; iv.ByVersion != nil {
		t.Fatalf("one version answered, yet split: %+v", iv)
	}
}
