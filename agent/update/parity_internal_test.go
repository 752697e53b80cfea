package update

import "testing"

// The ring keeps at most n requests per model and maxBytes over all
// models; when bytes run out, the model holding the most gives way.
func TestParityRingBounds(t *testing.T) {
	r := newParityRing(3, 100)
	for range 5 {
		r.add("a", nil, make([]byte, 10))
	}
	if n := len(r.snapshot("a")); n != 3 || r.total != 30 {
		t.Fatalf("a: %d samples, %d bytes; want 3 and 30", n, r.total)
	}
	for range 3 {
		r.add("b", make([]byte, 30), nil)
	}
	if r.total > 100 {
		t.Fatalf("%d bytes kept over the 100 allowed", r.total)
	}
	if len(r.snapshot("a")) != 3 || len(r.snapshot("b")) != 2 {
		t.Fatalf("a %d, b %d: the largest holder (b) should give way", len(r.snapshot("a")), len(r.snapshot("b")))
	}
	r.add("c", nil, make([]byte, 101)) // larger than the whole ring: not kept
	if len(r.snapshot("c")) != 0 {
		t.Fatal("a sample over maxBytes was kept")
	}
	r.forget("b")
	if r.total != 30 {
		t.Fatalf("after forgetting b: %d bytes", r.total)
	}
	off := newParityRing(0, 100)
	off.add("a", nil, []byte{1})
	if len(off.snapshot("a")) != 0 {
		t.Fatal("parity_ring = 0 keeps requests")
	}
}
