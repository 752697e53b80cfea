package mqtt

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The waits are random below a ceiling that doubles from min to max, and
// start over after a reset; drawn values spread over the whole window.
func TestBackoffFullJitter(t *testing.T) {
	top := func() float64 { return 0.999999 }
	b := backoff{min: time.Second, max: time.Minute, rand: top}
	var ceilings []time.Duration
	for range 10 {
		ceilings = append(ceilings, b.next().Round(time.Second))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60, 60}
	for i, w := range want {
		if ceilings[i] != w*time.Second {
			t.Fatalf("wait %d at the top of its window: %v, want %v (all: %v)", i, ceilings[i], w*time.Second, ceilings)
		}
	}
	b.reset()
	if d := b.next(); d > time.Second {
		t.Fatalf("after a reset: %v", d)
	}
	b = backoff{min: time.Second, max: time.Minute, rand: func() float64 { return 0 }}
	if d := b.next(); d != 0 {
		t.Fatalf("full jitter starts at 0: %v", d)
	}
	// Fifty agents after the same failure: spread, not lockstep.
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[time.Duration]bool{}
	for range 50 {
		a := backoff{min: time.Second, max: time.Minute, rand: r.Float64, n: 5}
		seen[a.next().Truncate(time.Second)] = true
	}
	if len(seen) < 15 {
		t.Fatalf("50 waits in a 32 s window fell in only %d distinct seconds", len(seen))
	}
	for i := range 40 { // no overflow, whatever the attempt count
		b := backoff{min: time.Second, max: time.Minute, rand: top, n: i * 2}
		if d := b.next(); d < 0 || d > time.Minute {
			t.Fatalf("attempt %d: %v", i*2, d)
		}
	}
}
