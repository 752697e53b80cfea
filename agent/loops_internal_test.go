package agent

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The tuned loops restart only when their settings changed, and the old
// ones have stopped before the new ones start.
func TestLoopRunnerRetunesOnlyOnChange(t *testing.T) {
	var settings atomic.Pointer[tunedSettings]
	settings.Store(&tunedSettings{keepAlive: time.Minute})
	var wg sync.WaitGroup
	spawn := func(ctx context.Context, f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	r := &loopRunner{spawn: spawn, settings: func() tunedSettings { return *settings.Load() }}
	if r.retune() {
		t.Fatal("retuned before the loops started")
	}
	var running, starts atomic.Int32
	overlap := make(chan struct{}, 1)
	loop := func(ctx context.Context) {
		starts.Add(1)
		if running.Add(1) != 1 {
			overlap <- struct{}{}
		}
		<-ctx.Done()
		running.Add(-1)
	}
	runCtx, stop := context.WithCancel(context.Background())
	r.startTuned(runCtx, loop)
	eventually(t, func() bool { return starts.Load() == 1 })
	if r.retune() {
		t.Fatal("retuned with the same settings")
	}
	settings.Store(&tunedSettings{keepAlive: 2 * time.Minute})
	if !r.retune() {
		t.Fatal("not retuned after a change")
	}
	eventually(t, func() bool { return starts.Load() == 2 })
	if r.retune() {
		t.Fatal("retuned again with the settings it restarted on")
	}
	stop()
	wg.Wait()
	select {
	case <-overlap:
		t.Fatal("a restarted loop ran beside the one it replaced")
	default:
	}
	if n := starts.Load(); n != 2 {
		t.Fatalf("%d starts, want 2", n)
	}
}

// A loop runs on the test's ticks for its name, when kicked, and once more
// when its context ends.
func TestLoopRunnerTicksAndKicks(t *testing.T) {
	ticks := make(chan time.Time)
	r := &loopRunner{ticks: func(name string) <-chan time.Time {
		if name == "x" {
			return ticks
		}
		return nil
	}}
	kick := make(chan struct{})
	ran := make(chan struct{}, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.kicked(ctx, "x", time.Hour, kick, func() { ran <- struct{}{} })
	}()
	ticks <- time.Now()
	<-ran
	kick <- struct{}{}
	<-ran
	cancel()
	<-done
	select {
	case <-ran:
	default:
		t.Fatal("no last run when the context ended")
	}
}

func eventually(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
