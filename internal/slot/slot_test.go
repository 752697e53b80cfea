package slot_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/internal/slot"
)

// A large load waiting for the slot is not starved by a stream of small
// ones: each small load served before it halves what it counts, so it goes
// first after about log2(large/small) of them (here 2^20/1: the 21st).
func TestLoadSlotAgingServesLargeLoad(t *testing.T) {
	var s slot.Slot
	ctx := context.Background()
	if err := s.Acquire(ctx, 0); err != nil {
		t.Fatal(err)
	}
	type holder struct {
		name    string
		release chan struct{}
	}
	granted := make(chan holder)
	var wg sync.WaitGroup
	wait := func(name string, cost int64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Acquire(ctx, cost); err != nil {
				t.Error(err)
				return
			}
			h := holder{name, make(chan struct{})}
			granted <- h
			<-h.release
			s.Release()
		}()
	}
	wait("large", 1<<20)
	waitFor(t, func() bool { return s.Waiting() == 1 })
	release := s.Release // the test holds the slot first
	served := -1
	for round := 0; round < 40 && served < 0; round++ {
		wait(fmt.Sprintf("small%d", round), 1)
		waitFor(t, func() bool { return s.Waiting() == 2 })
		release()
		h := <-granted
		release = func() { close(h.release) }
		if h.name == "large" {
			served = round
		}
	}
	// Drain: whoever holds the slot and whoever still waits.
	go func() {
		for h := range granted {
			close(h.release)
		}
	}()
	release()
	wg.Wait()
	close(granted)
	if served < 0 {
		t.Fatal("the large load was never served while small loads kept coming")
	}
	if served > 20 {
		t.Fatalf("the large load waited %d rounds; aging should serve it by round 20", served)
	}
}

// Loads waiting for the load slot go cheapest first; a waiter whose ctx
// ends leaves the queue, and the slot is never lost.
func TestLoadSlotCheapestFirst(t *testing.T) {
	var s slot.Slot
	ctx := context.Background()
	if err := s.Acquire(ctx, 0); err != nil {
		t.Fatal(err)
	}
	order := make(chan int64, 3)
	var wg sync.WaitGroup
	for i, cost := range []int64{300, 100, 200} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Acquire(ctx, cost); err != nil {
				t.Error(err)
				return
			}
			order <- cost
			s.Release()
		}()
		waitFor(t, func() bool { return s.Waiting() == i+1 })
	}
	waitFor(t, func() bool { return s.Waiting() == 3 })
	short, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Acquire(short, 1); err == nil {
		t.Fatal("acquired with a cancelled context while held")
	}
	s.Release()
	wg.Wait()
	close(order)
	var got []int64
	for c := range order {
		got = append(got, c)
	}
	if !slices.Equal(got, []int64{100, 200, 300}) {
		t.Fatalf("order %v", got)
	}
	if err := s.Acquire(ctx, 5); err != nil { // free again
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
