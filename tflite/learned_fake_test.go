package tflite

import (
	"slices"
	"testing"
	"time"
)

// What a pool learned its models' misses cost, handed to a new pool as
// KnownMisses, ranks the model at once: the same cold cost before any load.
func TestFakePoolLearnedCostsCarryOver(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	models := map[string]*fakeModel{"a": {size: 40, heap: 10, cold: 30 * ms, first: 80 * ms, steady: 10 * ms}, "b": {size: 40, heap: 10, cold: ms, first: 3 * ms, steady: ms}}
	p, _ := fakePool(t, PoolOptions{Now: func() time.Time { return now }}, models)
	for range 4 { // every request a miss, with its first invoke
		missAndInvoke(t, p, "a", 1)
		missAndInvoke(t, p, "b", 1)
		now = now.Add(time.Second)
	}
	learned := p.LearnedCosts()
	if len(learned["a"]) != 4 || len(learned["b"]) != 4 {
		t.Fatalf("learned %v, want 4 misses of each", learned)
	}
	before := coldCostsMs(p)

	q := newPool(PoolOptions{Budget: 60, Now: func() time.Time { return now }}, newFakeLoader(models))
	t.Cleanup(func() { _ = q.Close() })
	for id, m := range models {
		if err := q.Register(ModelSpec{ID: id, Path: id, KnownHeap: m.heap, KnownMisses: learned[id]}); err != nil {
			t.Fatal(err)
		}
	}
	if after := coldCostsMs(q); after["a"] != before["a"] || after["b"] != before["b"] || after["a"] <= after["b"] {
		t.Fatalf("cold costs before any load %v, want the learned %v", after, before)
	}
	if got := q.LearnedCosts(); !slices.Equal(got["a"], learned["a"]) {
		t.Fatalf("carried over %v, want %v", got["a"], learned["a"])
	}
}

func coldCostsMs(p *Pool) map[string]float64 {
	out := map[string]float64{}
	for _, m := range p.Models() {
		out[m.ID] = m.ColdMs
	}
	return out
}
