package tflite

import (
	"context"
	"testing"
	"time"
)

func TestDurationsMedian(t *testing.T) {
	var r durations
	if _, ok := r.median(0); ok {
		t.Fatal("a median of nothing")
	}
	if m, _ := r.median(8); m != 8 {
		t.Fatalf("prior alone: %v", m)
	}
	r.add(2)
	if m, _ := r.median(8); m != 5 {
		t.Fatalf("prior 8 and 2: %v, want their mean", m)
	}
	for range costSamples {
		r.add(3)
	}
	r.add(1000) // one outlier among the latest moves nothing
	if m, _ := r.median(8); m != 3 {
		t.Fatalf("median %v, want 3", m)
	}
	if r.n != costSamples+2 {
		t.Fatalf("counted %d", r.n)
	}
}

// missAndInvoke makes id cold, then acquires it for a request that invokes
// once (its first invoke), and invokes warm `warm` times more.
func missAndInvoke(t *testing.T, p *Pool, id string, warm int) {
	t.Helper()
	if err := p.Evict(id); err != nil {
		t.Fatal(err)
	}
	for i := range warm + 1 {
		l, err := p.Acquire(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if l.Warm == (i == 0) {
			t.Fatalf("request %d: warm %t", i, l.Warm)
		}
		if err := l.Invoke(); err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
}

func coldMs(t *testing.T, p *Pool, id string) float64 {
	t.Helper()
	for _, m := range p.Models() {
		if m.ID == id {
			return m.ColdMs
		}
	}
	t.Fatalf("no model %s", id)
	return 0
}

// A calibration far off the misses the pool serves is outvoted by them:
// the policy ranks by what requests pay (the load and the first invoke's
// penalty over the steady invokes seen), the calibrated figure counting as
// one miss.
func TestFakePoolLearnsColdCostFromMisses(t *testing.T) {
	m := &fakeModel{size: 10, heap: 1, cold: 10 * time.Millisecond, first: 30 * time.Millisecond, steady: 5 * time.Millisecond}
	l := newFakeLoader(map[string]*fakeModel{"a": m})
	p := newPool(PoolOptions{}, l)
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Register(ModelSpec{ID: "a", Path: "a", KnownHeap: 1, KnownSteady: 5 * time.Millisecond, KnownSaved: 400 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	use(t, p, "a") // warm, not invoked: nothing learned yet
	if got := coldMs(t, p, "a"); got != 400 {
		t.Fatalf("before any miss: %v ms, want the calibrated 400", got)
	}
	missAndInvoke(t, p, "a", 3)
	if got := coldMs(t, p, "a"); got != (400+35)/2. {
		t.Fatalf("after one miss: %v ms, want the mean of 400 and 35", got)
	}
	for range 3 {
		missAndInvoke(t, p, "a", 1)
	}
	// Each miss cost the 10 ms load and 30 − 5 ms of first invoke.
	if got := coldMs(t, p, "a"); got != 35 {
		t.Fatalf("after four misses: %v ms, want 35", got)
	}
	// A cost that changes (the machine got slower) is followed.
	m.first = 105 * time.Millisecond
	for range costSamples {
		missAndInvoke(t, p, "a", 1)
	}
	if got := coldMs(t, p, "a"); got != 110 {
		t.Fatalf("after the change: %v ms, want 110", got)
	}
}

// The learned costs change which model the cost-aware policies evict: a
// model calibrated as expensive but cheap in practice leaves before one
// calibrated as cheap whose misses cost more.
func TestFakePoolEvictsByLearnedCost(t *testing.T) {
	models := map[string]*fakeModel{
		"overrated":  {size: 40, heap: 0, cold: time.Millisecond, first: time.Millisecond, steady: time.Millisecond},
		"underrated": {size: 40, heap: 0, cold: 20 * time.Millisecond, first: time.Millisecond, steady: time.Millisecond},
		"other":      {size: 40, heap: 0, cold: time.Millisecond},
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	policy, _ := NewPolicy("gdsf", PolicyOptions{})
	l := newFakeLoader(models)
	p := newPool(PoolOptions{Budget: 80, Policy: policy, Now: func() time.Time { return now }}, l)
	t.Cleanup(func() { _ = p.Close() })
	for id, saved := range map[string]time.Duration{"overrated": 50 * time.Millisecond, "underrated": 5 * time.Millisecond, "other": time.Millisecond} {
		if err := p.Register(ModelSpec{ID: id, Path: id, KnownSteady: time.Millisecond, KnownSaved: saved}); err != nil {
			t.Fatal(err)
		}
	}
	// Both are requested alike and miss a few times each.
	for range 3 {
		for _, id := range []string{"overrated", "underrated"} {
			now = now.Add(time.Second)
			if p.IsWarm(id) {
				missAndInvoke(t, p, id, 0)
				continue
			}
			lease, err := p.Acquire(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if err := lease.Invoke(); err != nil {
				t.Fatal(err)
			}
			lease.Release()
		}
	}
	if o, u := coldMs(t, p, "overrated"), coldMs(t, p, "underrated"); o >= u {
		t.Fatalf("learned costs: overrated %v ms, underrated %v ms", o, u)
	}
	now = now.Add(time.Second)
	use(t, p, "other") // room for one of the two
	if w := warmIDs(p); !w["underrated"] || w["overrated"] {
		t.Fatalf("warm %v: the model whose misses cost more should stay", w)
	}
}
