package tflite

import (
	"context"
	"testing"
)

// reaperHolding is how many loads wait for the reaper's frees to finish
// before they measure.
func reaperHolding(p *Pool) int {
	p.reaper.mu.Lock()
	defer p.reaper.mu.Unlock()
	return p.reaper.holding
}

func knownHeapOf(p *Pool, id string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.entries[id].knownHeap
}

// A load measures its heap as the allocator's growth over the warm-up: the
// frees of the models it evicted must not run inside that measurement, or
// the load is accounted at what it allocated minus what they freed
// (clamped at 0), the known heap is overwritten with that, and the pool
// under-counts what the process holds. Here b's prewarm evicts a, whose
// free runs on the reaper; the test lets it finish in the middle of b's
// warm-up if b measures meanwhile.
func TestFakePoolLoadMeasuresAfterItsEvictionsAreFreed(t *testing.T) {
	free := make(chan struct{})
	gate := make(chan struct{})
	models := map[string]*fakeModel{
		"a": {size: 40, heap: 10, closing: free},
		"b": {size: 41, heap: 10, measure: true, gate: gate},
	}
	p, l := fakePool(t, PoolOptions{Budget: 60}, models)
	use(t, p, "a")
	done := make(chan error, 1)
	go func() {
		_, _, err := p.Prewarm(context.Background(), "b")
		done <- err
	}()
	<-free // a's free runs on the reaper, and is held there
	waitUntil(t, "b measures, or waits for the frees before it measures", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.inWarm > 0 || reaperHolding(p) > 0
	})
	free <- struct{}{} // a's free finishes
	waitUntil(t, "a is freed", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.closes == 1
	})
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	p.WaitFreed()
	if s, held := p.Stats(), l.held(); s.BytesInUse < held {
		t.Fatalf("the pool accounts %d bytes, the loader holds %d", s.BytesInUse, held)
	}
	if k := knownHeapOf(p, "b"); k != 10 {
		t.Fatalf("b's known heap %d after its prewarm, want 10", k)
	}
}

// A known heap that this device exceeds is not trusted as-is (a twin's
// record may be a quarter low and still pass its check): a request's load
// skips the warm-up invoke, and its own first invoke measures what the
// interpreter really holds; the accounting and the known heap rise to it.
func TestFakePoolKnownHeapRisesToWhatThisDeviceMeasures(t *testing.T) {
	l := newFakeLoader(map[string]*fakeModel{"m": {size: 40, heap: 4, invokeHeap: 6, measure: true}})
	p := newPool(PoolOptions{Budget: 100}, l)
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Register(ModelSpec{ID: "m", Path: "m", KnownHeap: 6}); err != nil { // the record: 6, really 10
		t.Fatal(err)
	}
	for range 2 {
		lease, err := p.Acquire(context.Background(), "m")
		if err != nil {
			t.Fatal(err)
		}
		if err := lease.Invoke(); err != nil {
			t.Fatal(err)
		}
		lease.Release()
		if s, held := p.Stats(), l.held(); s.BytesInUse < held {
			t.Fatalf("the pool accounts %d bytes, the loader holds %d", s.BytesInUse, held)
		}
		if k := knownHeapOf(p, "m"); k != 10 {
			t.Fatalf("known heap %d after a measured invoke, want 10", k)
		}
		if err := p.Evict("m"); err != nil {
			t.Fatal(err)
		}
		p.WaitFreed()
	}
}

// One full warm-up measuring less than the known heap does not lower it
// (a free elsewhere in the process lowers a measurement); a second one in
// a row does.
func TestFakePoolLowerHeapNeedsConfirming(t *testing.T) {
	l := newFakeLoader(map[string]*fakeModel{"m": {size: 40, heap: 6, measure: true}})
	p := newPool(PoolOptions{Budget: 100}, l)
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Register(ModelSpec{ID: "m", Path: "m", KnownHeap: 10}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int64{10, 6} {
		if _, _, err := p.Prewarm(context.Background(), "m"); err != nil {
			t.Fatal(err)
		}
		if k, b := knownHeapOf(p, "m"), p.Stats().BytesInUse; k != want || b != 40+want {
			t.Fatalf("prewarm %d measuring 6: known heap %d, %d bytes accounted; want %d and %d", i+1, k, b, want, 40+want)
		}
		if err := p.Evict("m"); err != nil {
			t.Fatal(err)
		}
	}
}

// Two first invokes that overlap each read the other's growth too (the C
// allocator is process-wide): a small model read beside a large one must
// not be charged the large one's heap, or the budget refuses models that
// fit (a pinned model charged that way holds the room for good). Here the
// small model's first invoke is held open while the large one's runs.
func TestFakePoolOverlappingFirstInvokesAreNotChargedEachOther(t *testing.T) {
	gate := make(chan struct{})
	l := newFakeLoader(map[string]*fakeModel{
		"small": {size: 40, heap: 4, invokeHeap: 2, measure: true, invokeGate: gate},
		"big":   {size: 40, heap: 10, invokeHeap: 60, measure: true},
	})
	p := newPool(PoolOptions{Budget: 1000}, l)
	t.Cleanup(func() { _ = p.Close() })
	for _, id := range []string{"small", "big"} {
		if err := p.Register(ModelSpec{ID: id, Path: id}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	small, err := p.Acquire(ctx, "small")
	if err != nil {
		t.Fatal(err)
	}
	big, err := p.Acquire(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	estimate := bytesOf(p, "small")
	done := make(chan error, 1)
	go func() { done <- small.Invoke() }()
	waitUntil(t, "the small model's first invoke allocated", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.heap == 4+10+2
	})
	if err := big.Invoke(); err != nil {
		t.Fatal(err)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	small.Release()
	big.Release()
	if got := bytesOf(p, "small"); got > estimate {
		t.Fatalf("small is accounted %d bytes after a first invoke read beside big's, want at most its estimate %d", got, estimate)
	}
}

func bytesOf(p *Pool, id string) int64 {
	for _, m := range p.Models() {
		if m.ID == id {
			return m.Bytes
		}
	}
	return -1
}
