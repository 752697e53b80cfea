// Package smallfirst holds large work back while small work runs.
//
// At a start every model may be asked at once. The reads, checks and loads
// of the large files (megabytes: C calls and disk reads that keep a core
// and the disk queue for milliseconds each) then share two cores and one
// disk with those of a 400-byte model, whose own work is a millisecond:
// traced, such a model's check took 7 ms and its answer came 20 ms after
// the start, where a naive loop answers in 2–6. Large work that waits a
// few milliseconds for the small loses nothing measurable (it takes
// 100–500 ms); the small is served at once.
package smallfirst

import (
	"context"
	"runtime"
	"sync"
	"time"
)

// DefaultMax is how long Wait holds large work back when Gate.Max is
// zero: a small model's registration and load take a few milliseconds.
const DefaultMax = 25 * time.Millisecond

// Gate counts the small work in flight. Small work never waits at it;
// large work waits (Wait) until none is in flight, for at most Max, so a
// steady stream of small work delays large work but cannot starve it.
// The zero Gate is ready; a nil *Gate never holds anything back.
type Gate struct {
	// Max bounds one Wait; 0 means DefaultMax.
	Max time.Duration
	// mu guards small, waiting and idle.
	mu      sync.Mutex
	small   int
	waiting int
	// idle is closed when small drops to zero (nil while none ran).
	idle chan struct{}
}

// Small marks small work in flight until done is called (once).
func (g *Gate) Small() (done func()) {
	if g == nil {
		return func() {}
	}
	g.mu.Lock()
	if g.small == 0 {
		g.idle = make(chan struct{})
	}
	g.small++
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.small--
			if g.small == 0 {
				close(g.idle)
			}
			g.mu.Unlock()
		})
	}
}

// Wait returns once no small work is in flight, after at most Max (or
// when ctx ends: its error). It first yields the processor: requests that
// arrive together run on goroutines started together, and the one for a
// small model may not have run far enough to mark itself yet.
func (g *Gate) Wait(ctx context.Context) error {
	if g == nil {
		return nil
	}
	runtime.Gosched()
	return g.wait(ctx, g.max())
}

func (g *Gate) wait(ctx context.Context, max time.Duration) error {
	var deadline <-chan time.Time
	for {
		g.mu.Lock()
		n, idle := g.small, g.idle
		if n == 0 {
			g.mu.Unlock()
			return nil
		}
		g.waiting++
		g.mu.Unlock()
		if deadline == nil {
			t := time.NewTimer(max)
			defer t.Stop()
			deadline = t.C
		}
		var err error
		done := false
		select {
		case <-idle:
			// Small work ended; more may have begun since: look again.
		case <-deadline:
			done = true
		case <-ctx.Done():
			err, done = ctx.Err(), true
		}
		g.mu.Lock()
		g.waiting--
		g.mu.Unlock()
		if done {
			return err
		}
	}
}

func (g *Gate) max() time.Duration {
	if g.Max > 0 {
		return g.Max
	}
	return DefaultMax
}

// Pace returns a function for the breaks of one long piece of large work
// (between the chunks of a file it reads): a call waits while small work
// is in flight, all calls together at most Max, so small work that starts
// after the large began is not held up by the rest of it. With none in
// flight it returns at once (a bare yield only moves the goroutine to the
// global run queue, which the other core serves first).
func (g *Gate) Pace(ctx context.Context) func() {
	if g == nil {
		return func() {}
	}
	left := g.max()
	return func() {
		if left <= 0 || g.InFlight() == 0 {
			return
		}
		t := time.Now()
		_ = g.wait(ctx, left) // an ended ctx: the caller's to see
		left -= time.Since(t)
	}
}

// InFlight is the small work in flight now.
func (g *Gate) InFlight() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.small
}

// Waiting is the large work waiting now.
func (g *Gate) Waiting() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}
