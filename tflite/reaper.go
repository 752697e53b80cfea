package tflite

import "sync"

// reaper runs the pool's C frees and munmaps (interpreter deletes, model
// closes, then giving freed heap back to the kernel) in the order they were
// queued, on a goroutine of its own: a request that evicted to make room
// does not wait for them (TfLiteInterpreterDelete and a large munmap take
// milliseconds). The goroutine runs while there is work and exits when the
// queue is empty; Pool.Close waits for it.
type reaper struct {
	mu      sync.Mutex
	queue   []func()
	trim    bool // give freed heap back once the queue is empty
	running bool
	idle    *sync.Cond // signalled when the queue is empty and nothing runs
	wg      sync.WaitGroup
	release func() // loader.releaseHeap
}

func newReaper(release func()) *reaper {
	r := &reaper{release: release}
	r.idle = sync.NewCond(&r.mu)
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
		if len(r.queue) == 0 {
			if !r.trim {
				r.running = false
				r.idle.Broadcast()
				r.mu.Unlock()
				return
			}
			r.trim = false
			r.mu.Unlock()
			r.release()
			r.mu.Lock()
			continue
		}
		batch := r.queue
		r.queue = nil
		r.mu.Unlock()
		for _, f := range batch {
			f()
		}
		r.mu.Lock()
	}
}

// drain waits until everything queued so far has run.
func (r *reaper) drain() {
	r.mu.Lock()
	for r.running {
		r.idle.Wait()
	}
	r.mu.Unlock()
}
