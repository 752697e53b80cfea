package tflite

import "sync"

// heapReadings tracks the invokes that read the C heap around themselves
// (a lease's first invoke, Lease.Invoke). The allocator is process-wide:
// two first invokes that overlap each read both their growths, so a
// reading that overlapped another is an upper bound, not this
// interpreter's heap.
type heapReadings struct {
	mu       sync.Mutex
	inFlight int
	started  uint64
}

// begin starts a reading; pass what it returns to end.
func (h *heapReadings) begin() heapReading {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.started++
	r := heapReading{started: h.started, alone: h.inFlight == 0}
	h.inFlight++
	return r
}

// end finishes r and reports whether no other reading ran beside it.
func (h *heapReadings) end(r heapReading) (alone bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inFlight--
	return r.alone && h.started == r.started
}

type heapReading struct {
	started uint64
	alone   bool
}
