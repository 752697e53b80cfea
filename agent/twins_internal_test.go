package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent/calibrate"
	"github.com/edge-agent/edge-agent/storage"
)

// A wrong heap is a disagreement whatever the times say: busy cores make a
// time disagreement doubtful, and must not hide the heap's.
func TestDisagreementHeapBeforeTime(t *testing.T) {
	var cal storage.Calibration
	cal.HeapBytes = 4 << 20
	cal.Stages.Steady = 10 * time.Millisecond
	for _, c := range []struct {
		name       string
		steady     time.Duration
		heap       int64
		want       string // "" or a substring of the reason
		timingOnly bool
	}{
		{"agrees", 10 * time.Millisecond, 4 << 20, "", false},
		{"slow only", 30 * time.Millisecond, 4 << 20, "steady invoke", true},
		{"wrong heap", 10 * time.Millisecond, 40 << 20, "heap", false},
		{"wrong heap, slow too", 30 * time.Millisecond, 40 << 20, "heap", false},
	} {
		why, timing := disagreement(cal, calibrate.SteadyTimes{Wall: c.steady}, c.heap, 0.5)
		if (c.want == "") != (why == "") || !strings.Contains(why, c.want) || timing != c.timingOnly {
			t.Errorf("%s: %q (timing %v), want %q (timing %v)", c.name, why, timing, c.want, c.timingOnly)
		}
	}
}
