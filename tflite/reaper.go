package tflite

import "sync"

// reaper runs the pool's C frees and munmaps (interpreter deletes, model
// closes, then giving freed heap back to the kernel) in the order they were
// queued, on a goroutine of its own: a request that evicted to make room
// does not wait for them (TfLiteInterpreterDelete and a large munmap take
// milliseconds). The goroutine runs while there is work and exits when the
// queue is empty; Pool.Close waits for it.
//
// A heap measurement is the allocator's count after a load minus before
// it: a free running in between lowers it (clamped at 0, the pool would
// under-count). A load whose measurement is believed holds the reaper
// (hold: the frees queued so far run first, later ones wait for unhold);
// shorter measurements check activity before and after instead.
type reaper struct {
	mu        sync.Mutex
	queue     []func()
	trim      bool // give freed heap back once the queue is empty
	running   bool
	executing bool       // a batch (or the trim) runs now
	epoch     uint64     // batches started, ever
	holds     int        // measurements under way: no batch starts
	holding   int        // hold calls waiting for the queue to empty
	cond      *sync.Cond // signalled on every change of the above
	wg        sync.WaitGroup
	release   func() // loader.releaseHeap
}

func newReaper(release func()) *reaper {
	r := &reaper{release: release}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// add queues frees; trim asks for the heap to be given back after them.
func (r *reaper) add(frees []func(), trim bool) {
	if len(frees) == 0 && !trim {
		return
	}
	r.mu.Lock()
	r.queue = append(r.queue, frees...)
	r.trim = r.trim || trim
	start := !r.running
	r.running = true
	if start {
		r.wg.Add(1)
	}
	r.mu.Unlock()
	if start {
		go r.run()
	}
}

func (r *reaper) run() {
	defer r.wg.Done()
	r.mu.Lock()
	for {
		for r.holds > 0 {
			r.cond.Wait()
		}
		if len(r.queue) == 0 {
			if !r.trim {
				r.running = false
				r.cond.Broadcast()
				r.mu.Unlock()
				return
			}
			r.trim = false
			r.begin()
			r.release()
			r.end()
			continue
		}
		batch := r.queue
		r.queue = nil
		r.begin()
		for _, f := range batch {
			f()
		}
		r.end()
	}
}

// begin marks a batch started and releases mu; end takes it back.
func (r *reaper) begin() {
	r.executing = true
	r.epoch++
	r.mu.Unlock()
}

func (r *reaper) end() {
	r.mu.Lock()
	r.executing = false
	r.cond.Broadcast()
}

// hold waits until every free queued so far has run and keeps later ones
// from starting until unhold: a measurement between them sees no free.
func (r *reaper) hold() {
	r.mu.Lock()
	r.holding++
	for len(r.queue) > 0 || r.executing {
		r.cond.Wait()
	}
	r.holding--
	r.holds++
	r.mu.Unlock()
}

// unhold ends a hold.
func (r *reaper) unhold() {
	r.mu.Lock()
	r.holds--
	r.cond.Broadcast()
	r.mu.Unlock()
}

// reaperActivity tells whether frees ran between two readings.
type reaperActivity struct {
	epoch uint64
	busy  bool
}

// activity is a reading: a measurement between two equal readings, both
// not busy, saw no free.
func (r *reaper) activity() reaperActivity {
	r.mu.Lock()
	defer r.mu.Unlock()
	return reaperActivity{r.epoch, r.executing}
}

// drain waits until everything queued so far has run.
func (r *reaper) drain() {
	r.mu.Lock()
	for r.running {
		r.cond.Wait()
	}
	r.mu.Unlock()
}
