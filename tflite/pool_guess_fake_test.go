package tflite

import (
	"context"
	"testing"
	"time"
)

// entryWaiters is how many goroutines wait on model id's interpreter.
func entryWaiters(p *Pool, id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.entries[id].waiters
}

// A request waiting for room is a request, not a guess: a due prewarm of
// the same model that comes meanwhile (it queues behind the request's
// load) must not put the request's retry under the prewarm's rule (evict
// only models worth under half of it). Once the busy model is released it
// is evicted for the request, which is served.
func TestFakePoolRequestWaitingForRoomIsNoGuess(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	models := map[string]*fakeModel{
		"busy": {size: 40, heap: 10, cold: time.Second}, // worth far more than e's guess
		"e":    {size: 41, heap: 10},
	}
	p, _ := fakePool(t, PoolOptions{Budget: 60, Policy: mustPolicy(t, "histogram"), Now: func() time.Time { return now }}, models)
	held, err := p.Acquire(context.Background(), "busy")
	if err != nil {
		t.Fatal(err)
	}
	req := acquireInBackground(p, "e")
	waitUntil(t, "the request for e waits for room", func() bool { return roomWaiters(p) == 1 })

	// The keep-alive loop's rewarm of e: the load slot is free (the
	// request gave it up while it waits), so the prewarm goes ahead and
	// queues behind the request's load.
	guess := make(chan error, 1)
	go func() {
		_, _, err := p.PrewarmDue(context.Background(), "e")
		guess <- err
	}()
	waitUntil(t, "the rewarm waits for the request's load", func() bool { return entryWaiters(p, "e") == 1 })

	held.Release()
	if err := <-req; err != nil {
		t.Fatalf("the request, once busy was released: %v (want it served: busy is free to evict)", err)
	}
	if err := <-guess; err != nil {
		t.Fatalf("the rewarm: %v", err)
	}
	if w := warmIDs(p); !w["e"] || w["busy"] {
		t.Fatalf("warm %v, want e (busy evicted for the request)", w)
	}
}
