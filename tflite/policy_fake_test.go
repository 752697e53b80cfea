package tflite

import (
	"context"
	"slices"
	"testing"
	"time"
)

// ttl keeps LRU order and frees a model idle for its TTL, pinned ones
// excepted; lru and cost never free an idle model on their own.
func TestFakePoolTTLExpires(t *testing.T) {
	for _, c := range []struct {
		policy  string
		expires bool
	}{{"ttl", true}, {"lru", false}, {"cost", false}} {
		now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
		pol, err := NewPolicy(c.policy, PolicyOptions{TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		p, _ := fakePool(t, PoolOptions{Policy: pol, Now: func() time.Time { return now }},
			map[string]*fakeModel{"a": {size: 40, heap: 10}, "pin": {size: 40, heap: 10}}, "pin")
		use(t, p, "a")
		use(t, p, "pin")
		now = now.Add(59 * time.Second)
		if n := p.Expire(); n != 0 {
			t.Fatalf("%s: %d freed before the TTL", c.policy, n)
		}
		now = now.Add(2 * time.Second)
		p.Expire()
		if w := warmIDs(p); w["a"] == c.expires || !w["pin"] {
			t.Fatalf("%s after the TTL: warm %v (a should expire: %v; pin never)", c.policy, w, c.expires)
		}
	}
}

// histogram learns a timer's period: after enough regular requests the
// model is freed in the gap after each request (ranking below everything
// there), listed as due when its pre-warm window opens, and warm again
// before the next tick of the timer.
func TestFakePoolHistogramPrewarmsATimer(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	p, _ := fakePool(t, PoolOptions{Policy: mustPolicy(t, "histogram"), Now: func() time.Time { return now }},
		map[string]*fakeModel{"timer": {size: 40, heap: 10, cold: time.Second}})
	for range 8 { // every 5 minutes
		use(t, p, "timer")
		now = now.Add(5 * time.Minute)
	}
	use(t, p, "timer")
	now = now.Add(time.Second)
	if n := p.Expire(); n != 1 || warmIDs(p)["timer"] {
		t.Fatalf("1 s after a timer's request: %d freed, warm %v; want it freed in the gap", n, warmIDs(p))
	}
	now = now.Add(4 * time.Minute)
	if due := p.DuePrewarms(); len(due) != 0 {
		t.Fatalf("due %v in the gap", due)
	}
	now = now.Add(30 * time.Second) // the window opens at ~0.87 of the period
	due := p.DuePrewarms()
	if !slices.Equal(due, []string{"timer"}) {
		t.Fatalf("due %v at 4.5 min, want the timer", due)
	}
	if _, loaded, err := p.PrewarmDue(context.Background(), "timer"); err != nil || !loaded {
		t.Fatalf("PrewarmDue: loaded=%v err=%v", loaded, err)
	}
	if due := p.DuePrewarms(); len(due) != 0 {
		t.Fatalf("due %v right after its prewarm: one prewarm per gap", due)
	}
	now = now.Add(29 * time.Second)
	l, err := p.Acquire(context.Background(), "timer")
	if err != nil || !l.Warm {
		t.Fatalf("the timer's next request: warm=%v err=%v", l != nil && l.Warm, err)
	}
	l.Release()
}

// A model evicted for the budget while its window is open is due again,
// but its prewarm only takes room held by models expected to save under
// half what it will: it rewarms over a cheap, rarely used model, never
// over a busier one; and not at all while loads come too often for one
// more to be worth its time in the load slot.
func TestFakePoolHistogramRewarmsOnlyOverLesserModels(t *testing.T) {
	ms := time.Millisecond
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	models := map[string]*fakeModel{
		"hot":   {size: 40, heap: 10, cold: 20 * ms},
		"cheap": {size: 40, heap: 10, cold: ms},
		"dear":  {size: 40, heap: 10, cold: 10 * time.Second},
		"busy":  {size: 40, heap: 10, cold: 20 * ms},
	}
	p, _ := fakePool(t, PoolOptions{Budget: 100, Policy: mustPolicy(t, "histogram"), Now: func() time.Time { return now }}, models)
	for i := range 10 { // hot: a random caller, about every 200 ms
		use(t, p, "hot")
		use(t, p, "dear")
		now = now.Add(time.Duration(150+i*10) * ms)
	}
	use(t, p, "cheap") // evicts hot, worth less than dear
	if w := warmIDs(p); w["hot"] || !w["cheap"] || !w["dear"] {
		t.Fatalf("warm %v: want hot evicted for cheap", w)
	}
	now = now.Add(time.Second)
	if due := p.DuePrewarms(); !slices.Equal(due, []string{"hot"}) {
		t.Fatalf("due %v, want the evicted hot model", due)
	}
	if _, loaded, err := p.PrewarmDue(context.Background(), "hot"); err != nil || !loaded {
		t.Fatalf("rewarm over the cheap model: loaded=%v err=%v", loaded, err)
	}
	if w := warmIDs(p); !w["hot"] || w["cheap"] || !w["dear"] {
		t.Fatalf("after the rewarm: warm %v, want hot and dear", w)
	}
	// Now models worth more hold the room: busy is asked for far more
	// often than hot.
	for range 40 {
		use(t, p, "busy")
		now = now.Add(100 * ms)
	}
	if w := warmIDs(p); w["hot"] || !w["busy"] || !w["dear"] {
		t.Fatalf("warm %v: want busy and dear", w)
	}
	if _, loaded, err := p.PrewarmDue(context.Background(), "hot"); err != nil || loaded {
		t.Fatalf("rewarm over models worth more: loaded=%v err=%v, want neither", loaded, err)
	}
	if w := warmIDs(p); !w["dear"] || !w["busy"] {
		t.Fatalf("a refused rewarm evicted something: warm %v", w)
	}
}

// A rewarm holds the load slot for the model's cold time: while requests
// load often (a thrashing pool, slow storage), it is not worth it.
func TestFakePoolNoRewarmWhileLoadsComeOften(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	models := map[string]*fakeModel{"a": {size: 40, heap: 10, cold: time.Second}, "b": {size: 40, heap: 10, cold: time.Millisecond}}
	p, _ := fakePool(t, PoolOptions{Budget: 60, HalfLife: time.Minute, Policy: mustPolicy(t, "histogram"), Now: func() time.Time { return now }}, models)
	for range 25 { // room for one: every request loads
		use(t, p, "a")
		now = now.Add(time.Second)
		use(t, p, "b")
		now = now.Add(time.Second)
	}
	if _, loaded, err := p.PrewarmDue(context.Background(), "a"); err != nil || loaded {
		t.Fatalf("rewarm while a request loads every second: loaded=%v err=%v", loaded, err)
	}
}

// The C frees and munmaps of an eviction run on the pool's reaper: an
// Acquire that evicts returns while the evicted interpreter's free is
// still running, and Close waits for it.
func TestFakePoolEvictionFreesOffTheRequest(t *testing.T) {
	slow := make(chan struct{})
	p, l := fakePool(t, PoolOptions{Budget: 60}, map[string]*fakeModel{"a": {size: 40, heap: 10, closing: slow}, "b": {size: 41, heap: 10}})
	use(t, p, "a")
	// b evicts a; wait until a's free has started.
	done := acquireInBackground(p, "b")
	<-slow
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Acquire that evicted waited for the evicted interpreter's free")
	}
	if _, live := l.counts(); live != 2 {
		t.Fatalf("%d live interpreters while a's free runs, want 2", live)
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned before the free it waits for finished")
	case <-time.After(50 * time.Millisecond):
	}
	slow <- struct{}{}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if mapped, live := l.counts(); mapped != 0 || live != 0 {
		t.Fatalf("after Close: %d mappings, %d interpreters", mapped, live)
	}
}

// WaitFreed returns once the frees of the evictions so far have run (a
// trace replay waits for them between requests), not before.
func TestFakePoolWaitFreed(t *testing.T) {
	slow := make(chan struct{})
	p, l := fakePool(t, PoolOptions{Budget: 60}, map[string]*fakeModel{"a": {size: 40, heap: 10, closing: slow}, "b": {size: 41, heap: 10}})
	use(t, p, "a")
	p.WaitFreed() // nothing queued: returns at once
	// b evicts a; wait until a's free has started.
	acquired := acquireInBackground(p, "b")
	<-slow
	if err := <-acquired; err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() {
		p.WaitFreed()
		close(waited)
	}()
	select {
	case <-waited:
		slow <- struct{}{} // let the free finish, or the pool's Close waits for ever
		t.Fatal("WaitFreed returned while a's free was running")
	case <-time.After(50 * time.Millisecond):
	}
	slow <- struct{}{}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("WaitFreed did not return after the free finished")
	}
	if mapped, live := l.counts(); mapped != 1 || live != 1 {
		t.Fatalf("after WaitFreed: %d mappings, %d interpreters, want b's alone", mapped, live)
	}
}

// Freeing in the gap costs a reload per request: histogram does it only
// for a timer slow enough (a minute or more) and regular enough. A fast
// timer and a random caller stay warm.
func TestFakePoolHistogramKeepsFastAndRandomCallersWarm(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	p, _ := fakePool(t, PoolOptions{Policy: mustPolicy(t, "histogram"), Now: func() time.Time { return now }},
		map[string]*fakeModel{"fast": {size: 40, heap: 10, cold: time.Second}, "random": {size: 40, heap: 10, cold: time.Second}})
	gaps := []time.Duration{3, 40, 9, 200, 1, 70, 15, 120, 5, 30} // seconds, spread like a random caller's
	for i := range 10 {
		use(t, p, "fast")
		use(t, p, "random")
		now = now.Add(10 * time.Second)
		use(t, p, "fast")
		now = now.Add(gaps[i] * time.Second)
	}
	now = now.Add(2 * time.Second)
	if n := p.Expire(); n != 0 {
		t.Fatalf("%d freed, warm %v: want both kept", n, warmIDs(p))
	}
}
