package smallfirst

import (
	"context"
	"errors"
	"testing"
	"time"
)

// waitResult runs g.Wait on a goroutine of its own.
func waitResult(g *Gate, ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- g.Wait(ctx) }()
	return done
}

// untilWaiting blocks until n large waiters are at the gate.
func untilWaiting(t *testing.T, g *Gate, n int) {
	t.Helper()
	for g.Waiting() != n {
		time.Sleep(50 * time.Microsecond)
	}
}

// Large work waits while any small work is in flight and goes on once
// the last small work is done; with none in flight it does not wait.
func TestLargeWaitsForEverySmall(t *testing.T) {
	g := &Gate{Max: time.Hour}
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	a, b := g.Small(), g.Small()
	done := waitResult(g, context.Background())
	untilWaiting(t, g, 1)
	a()
	a() // done twice counts once
	if g.InFlight() != 1 {
		t.Fatalf("in flight %d after one of two ended", g.InFlight())
	}
	select {
	case err := <-done:
		t.Fatalf("large work went on beside small work in flight (%v)", err)
	default:
	}
	// A new small piece starting now holds it back too.
	c := g.Small()
	b()
	select {
	case err := <-done:
		t.Fatalf("large work went on beside small work in flight (%v)", err)
	default:
	}
	c()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g.Waiting() != 0 || g.InFlight() != 0 {
		t.Fatalf("waiting %d, in flight %d", g.Waiting(), g.InFlight())
	}
}

// Small work that never ends holds large work back for Max only, and a
// caller whose ctx ends gets its error.
func TestLargeWaitIsBounded(t *testing.T) {
	g := &Gate{Max: time.Millisecond}
	defer g.Small()()
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.Max = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := waitResult(g, ctx)
	untilWaiting(t, g, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	// Pace's waits together stay within one Max.
	g.Max = 2 * time.Millisecond
	pace := g.Pace(context.Background())
	t0 := time.Now()
	for range 1000 {
		pace()
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("1000 paced chunks beside stuck small work took %v, bound 2 ms in all", d)
	}
}

// A nil gate holds nothing back.
func TestNilGate(t *testing.T) {
	var g *Gate
	g.Small()()
	if err := g.Wait(context.Background()); err != nil || g.InFlight() != 0 || g.Waiting() != 0 {
		t.Fatal(err)
	}
	g.Pace(context.Background())()
}
