package tflite

import "sync"

// besideLoads counts the loads that run beside the load slot (tiny files):
// how many ever started, and how many run now.
type besideLoads struct {
	// mu guards started and running.
	mu      sync.Mutex
	started uint64
	running int
}

func (b *besideLoads) begin() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.started++
	b.running++
}

func (b *besideLoads) end() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.running--
}

func (b *besideLoads) activity() (started uint64, running int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.started, b.running
}
