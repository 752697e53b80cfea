package tflite

import (
	"testing"
	"time"
)

// A tiny model file loads beside a large load that holds the load slot
// (a 14 KB LSTM waited 15 ms behind a mobilenet at a first start); a
// model above tinyFile still waits for the slot. The tiny model's heap,
// measured while the other load ran, is not believed: it is accounted at
// its known heap when one was measured alone before (calibration), else at
// the guess, above its real heap.
func TestFakeTinyLoadRunsBesideALoad(t *testing.T) {
	gate := make(chan struct{})
	models := map[string]*fakeModel{
		"big":   {size: 8 << 20, heap: 4 << 20, measure: true, gate: gate},
		"mid":   {size: tinyFile + 1, heap: 64 << 10},
		"tiny":  {size: 2 << 10, heap: 40 << 10, measure: true},
		"known": {size: 2 << 10, heap: 40 << 10, measure: true},
	}
	l := newFakeLoader(models)
	p := newPool(PoolOptions{}, l)
	t.Cleanup(func() { _ = p.Close() })
	for id, m := range models {
		var known int64
		if id != "tiny" {
			known = m.heap
		}
		if err := p.Register(ModelSpec{ID: id, Path: id, KnownHeap: known}); err != nil {
			t.Fatal(err)
		}
	}
	bigDone := acquireInBackground(p, "big")
	waitUntil(t, "the large load holds the slot", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.inWarm == 1
	})
	midDone := acquireInBackground(p, "mid")
	for _, id := range []string{"tiny", "known"} {
		select {
		case err := <-acquireInBackground(p, id):
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second): // a failure bound, not a measure
			close(gate)
			t.Fatalf("the tiny model %s's load waited for the large one's", id)
		}
	}
	select {
	case <-midDone:
		t.Fatal("a model above tinyFile loaded while the load slot was held")
	default:
	}
	for _, m := range p.Models() {
		if m.ID == "tiny" && m.Bytes < tinyHeapGuess {
			t.Fatalf("tiny model accounted at %d bytes beside another load; want the guess (%d) or more", m.Bytes, tinyHeapGuess)
		}
		if want := models["known"].size + models["known"].heap; m.ID == "known" && m.Bytes != want {
			t.Fatalf("tiny model with a known heap accounted at %d bytes beside another load; want file and known heap (%d)", m.Bytes, want)
		}
	}
	close(gate)
	for _, done := range []<-chan error{bigDone, midDone} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
