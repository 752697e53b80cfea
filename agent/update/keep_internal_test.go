package update

import (
	"context"
	"sync"
	"testing"
	"time"
)

// spawner runs keeps on goroutines the test waits for.
type spawner struct {
	ctx context.Context
	wg  sync.WaitGroup
}

func (s *spawner) spawn(f func(context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f(s.ctx)
	}()
}

// A keep waits for quiet: its fn runs only once requests leave the pool
// alone.
func TestKeepWaitsForQuiet(t *testing.T) {
	quiet := make(chan struct{})
	k := newKeeper(func(ctx context.Context) error {
		select {
		case <-quiet:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil)
	s := &spawner{ctx: context.Background()}
	ran := make(chan struct{})
	k.keep(s.spawn, "m", func() { close(ran) })
	select {
	case <-ran:
		t.Fatal("the keep ran before quiet")
	case <-time.After(50 * time.Millisecond): // a bound on a failure, not a measure
	}
	close(quiet)
	<-ran
	s.wg.Wait()
	if err := k.wait(context.Background(), "m"); err != nil {
		t.Fatal(err)
	}
}

// Waiting for a keep hurries it: an update does not wait for quiet that
// never comes, and the keep ran when wait returns.
func TestWaitHurriesKeep(t *testing.T) {
	k := newKeeper(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, nil)
	s := &spawner{ctx: context.Background()}
	var order []string
	var mu sync.Mutex
	note := func(s string) func() {
		return func() { mu.Lock(); order = append(order, s); mu.Unlock() }
	}
	k.keep(s.spawn, "m", note("first"))
	k.keep(s.spawn, "m", note("second"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.wait(ctx, "m"); err != nil {
		t.Fatalf("wait: %v (quiet never comes: the wait must hurry the keep)", err)
	}
	mu.Lock()
	got := append([]string(nil), order...)
	mu.Unlock()
	// wait saw the latest keep, which ends after the one begun before it.
	if len(got) != 2 || got[0] != "first" || got[1] != "second" {
		t.Fatalf("kept %v, want [first second]", got)
	}
	s.wg.Wait()
}

// When the agent stops, a keep waiting for quiet still runs: what was
// served is kept.
func TestKeepRunsOnStop(t *testing.T) {
	k := newKeeper(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, nil)
	ctx, stop := context.WithCancel(context.Background())
	s := &spawner{ctx: ctx}
	ran := false
	k.keep(s.spawn, "m", func() { ran = true })
	stop()
	s.wg.Wait()
	if !ran {
		t.Fatal("a keep was dropped on stop")
	}
}
