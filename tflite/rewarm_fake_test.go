package tflite

import (
	"context"
	"slices"
	"testing"
	"time"
)

// histogram learns from its own rewarms: a model whose rewarm a request
// used is rewarmed again when evicted again; one whose rewarm was dropped
// before any request is not (one hit in two rewarms pays half a cold start
// against a whole load). A rewarm that never pays is a load counted in full.
func TestFakePoolHistogramLearnsFromItsRewarms(t *testing.T) {
	ms := time.Millisecond
	for _, used := range []bool{true, false} {
		now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
		models := map[string]*fakeModel{
			"hot":   {size: 40, heap: 10, cold: 20 * ms},
			"cheap": {size: 40, heap: 10, cold: ms},
			"dear":  {size: 40, heap: 10, cold: 10 * time.Second},
		}
		p, _ := fakePool(t, PoolOptions{Budget: 100, Policy: mustPolicy(t, "histogram"), Now: func() time.Time { return now }}, models)
		for i := range 10 { // hot: a random caller, about every 200 ms
			use(t, p, "hot")
			use(t, p, "dear")
			now = now.Add(time.Duration(150+i*10) * ms)
		}
		use(t, p, "cheap") // evicts hot, worth less than dear
		now = now.Add(time.Second)
		if due := p.DuePrewarms(); !slices.Equal(due, []string{"hot"}) {
			t.Fatalf("used=%v: due %v, want the evicted hot model (no rewarm seen yet)", used, due)
		}
		if _, loaded, err := p.PrewarmDue(context.Background(), "hot"); err != nil || !loaded {
			t.Fatalf("used=%v: first rewarm: loaded=%v err=%v", used, loaded, err)
		}
		if !used {
			if err := p.Evict("hot"); err != nil { // dropped unused: a wasted load
				t.Fatal(err)
			}
		}
		now = now.Add(200 * ms)
		use(t, p, "hot")
		now = now.Add(200 * ms)
		use(t, p, "cheap") // evicts hot again
		if w := warmIDs(p); w["hot"] || !w["dear"] {
			t.Fatalf("used=%v: warm %v, want hot evicted again", used, w)
		}
		now = now.Add(time.Second)
		due := p.DuePrewarms()
		if want := used; slices.Contains(due, "hot") != want {
			t.Fatalf("used=%v: due %v after the first rewarm was %s; want hot due: %v", used, due, map[bool]string{true: "used", false: "wasted"}[used], want)
		}
	}
}

// The rewarm allowance bounds PrewarmDue's loads: none below zero, a tenth
// of the hour's worth (at least one) at once, refilled with time.
func TestRewarmAllowance(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var a allowance
	for i := range 100 {
		if !a.take(now, 0) {
			t.Fatalf("take %d with no bound refused", i)
		}
	}
	if a.take(now, -1) {
		t.Fatal("take with a negative allowance granted")
	}
	a = allowance{}
	n := 0
	for a.take(now, 60) {
		n++
	}
	if n != 6 {
		t.Fatalf("%d loads at once of 60 an hour, want 6", n)
	}
	a.giveBack(60)
	if !a.take(now, 60) || a.take(now, 60) {
		t.Fatal("a load given back is not taken exactly once")
	}
	now = now.Add(time.Minute)
	if !a.take(now, 60) || a.take(now, 60) {
		t.Fatal("a minute at 60 an hour refills one load")
	}

	// A pool with no allowance left makes no rewarm.
	now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	p, _ := fakePool(t, PoolOptions{Budget: 100, RewarmsPerHour: -1, Policy: mustPolicy(t, "histogram"), Now: func() time.Time { return now }},
		map[string]*fakeModel{"a": {size: 40, heap: 10, cold: 20 * time.Millisecond}})
	if _, loaded, err := p.PrewarmDue(context.Background(), "a"); err != nil || loaded {
		t.Fatalf("rewarm with no allowance: loaded=%v err=%v", loaded, err)
	}
	p.SetRewarmsPerHour(0)
	if _, loaded, err := p.PrewarmDue(context.Background(), "a"); err != nil || !loaded {
		t.Fatalf("rewarm with no bound: loaded=%v err=%v", loaded, err)
	}
}
