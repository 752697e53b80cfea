package tflite

import (
	"sync"
	"testing"
	"time"
)

// enterAsync enters the gate on its own goroutine; the returned channel
// yields the turn once the invoke may run.
func enterAsync(g *invokeGate, cost time.Duration, threads int) <-chan *gateTurn {
	ch := make(chan *gateTurn, 1)
	go func() { ch <- g.enter(cost, threads, nil) }()
	return ch
}

// waitQueued waits until n invokes wait at the gate.
func waitQueued(t *testing.T, g *invokeGate, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mu.Lock()
		k := len(g.waiters)
		g.mu.Unlock()
		if k == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d invokes waiting, want %d", k, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func started(ch <-chan *gateTurn) (*gateTurn, bool) {
	select {
	case turn := <-ch:
		return turn, true
	default:
		return nil, false
	}
}

// Invokes that wait run cheapest first, whatever order they came in.
func TestGateRunsWaitingInvokesCheapestFirst(t *testing.T) {
	g := newInvokeGate(2, time.Minute)
	big := g.enter(200*time.Millisecond, 2, nil) // holds both cores; none below is short against it
	costs := []time.Duration{300 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}
	var chans []<-chan *gateTurn
	for i, c := range costs {
		chans = append(chans, enterAsync(g, c, 2))
		waitQueued(t, g, i+1)
	}
	g.leave(big)
	for _, want := range []int{1, 2, 0} {
		turn := <-chans[want]
		for i, ch := range chans {
			if i == want {
				continue
			}
			if other, ok := started(ch); ok {
				t.Fatalf("cost %v started beside cost %v: the two-thread invokes must run one at a time", other.cost, turn.cost)
			}
		}
		g.leave(turn)
	}
}

// Two one-thread invokes share two cores; a third waits.
func TestGateAdmitsWhileThreadsFitTheCores(t *testing.T) {
	g := newInvokeGate(2, time.Minute)
	a := g.enter(time.Second, 1, nil)
	b := g.enter(time.Second, 1, nil)
	c := enterAsync(g, time.Second, 1)
	waitQueued(t, g, 1)
	if _, ok := started(c); ok {
		t.Fatal("a third one-thread invoke ran on two busy cores")
	}
	g.leave(a)
	g.leave(<-c)
	g.leave(b)
}

// A short invoke joins a long one at once instead of queueing behind it;
// one about as long waits.
func TestGateLetsAShortInvokeJoinALongOne(t *testing.T) {
	g := newInvokeGate(2, time.Minute)
	long := g.enter(time.Hour, 2, nil)
	short := g.enter(time.Millisecond, 2, nil) // returns: it did not queue
	g.leave(short)
	peer := enterAsync(g, 30*time.Minute, 2)
	waitQueued(t, g, 1)
	if _, ok := started(peer); ok {
		t.Fatal("an invoke half as long as the running one joined it")
	}
	g.leave(long)
	g.leave(<-peer)
}

// A waiter is asked again when something leaves: one that became short
// against what still runs goes, though the cores are not free.
func TestGateAdmitsAWaiterThatBecameShort(t *testing.T) {
	g := newInvokeGate(2, time.Minute)
	long := g.enter(time.Hour, 2, nil)
	mid := g.enter(time.Minute, 2, nil) // joins the hour-long one
	small := enterAsync(g, time.Minute, 2)
	waitQueued(t, g, 1) // as long as mid: waits
	g.leave(mid)
	g.leave(<-small) // a minute against the hour left: joins
	g.leave(long)
}

// A large invoke passed over by a stream of small ones still runs: each
// one served before it halves its place in the order.
func TestGateDoesNotStarveALargeInvoke(t *testing.T) {
	g := newInvokeGate(1, time.Minute)
	holder := g.enter(time.Nanosecond, 1, nil)
	large := enterAsync(g, time.Duration(1)<<20, 1)
	waitQueued(t, g, 1)
	for served := 0; ; served++ {
		if served > 30 {
			t.Fatal("the large invoke was passed over more than 30 times")
		}
		small := enterAsync(g, 2, 1)
		waitQueued(t, g, 2)
		g.leave(holder)
		holder = <-small // runs now, or joins the large one as short
		g.mu.Lock()
		waiting := len(g.waiters)
		g.mu.Unlock()
		if waiting == 0 { // the large one went
			g.leave(<-large)
			g.leave(holder)
			return
		}
	}
}

// An invoke that never returns holds the others back by maxWait, not for
// ever.
func TestGateWaitIsBounded(t *testing.T) {
	g := newInvokeGate(1, 50*time.Millisecond)
	_ = g.enter(time.Second, 1, nil) // hangs: never leaves
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.leave(g.enter(time.Second, 1, nil))
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("invokes stayed behind one that hangs")
	}
}

// Without a gate (PoolOptions.InvokeCores < 0) every invoke runs at once.
func TestNilGateAdmitsEverything(t *testing.T) {
	var g *invokeGate
	g.leave(g.enter(time.Hour, 64, nil))
}

// An invoke on its way that is much cheaper (a request's model loading)
// holds back a costly one with the cores free: the cheap one goes first
// when it arrives, the costly one after it.
func TestGateHoldsALongInvokeForACheapOneOnItsWay(t *testing.T) {
	g := newInvokeGate(2, time.Minute)
	notice := g.expect(10 * time.Millisecond)
	big := enterAsync(g, time.Second, 2)
	waitQueued(t, g, 1)
	cheap := g.enter(10*time.Millisecond, 2, notice) // goes at once, ahead of the waiting one
	if _, ok := started(big); ok {
		t.Fatal("the costly invoke ran beside the cheap one")
	}
	g.leave(cheap)
	g.leave(<-big)
}

// A notice taken back (the load failed) lets what it held back run; one
// of unknown cost holds nothing back.
func TestGateForgetsANotice(t *testing.T) {
	g := newInvokeGate(2, time.Minute)
	_ = g.expect(0) // unknown: holds nothing back
	g.leave(g.enter(time.Second, 2, nil))
	notice := g.expect(time.Millisecond)
	big := enterAsync(g, time.Second, 2)
	waitQueued(t, g, 1)
	g.forget(notice)
	g.leave(<-big)
}

// The rate that turns a graph's work into time is learned from models
// large enough to say (tiny ones are call overhead), as a median.
func TestWorkRateLearnsFromLargeGraphs(t *testing.T) {
	var r workRate
	if got := r.estimate(1_000_000_000); got != time.Duration(defaultNsPerWork*1e9) {
		t.Fatalf("before any invoke: %v", got)
	}
	r.observe(40, time.Millisecond) // xor: overhead, not arithmetic
	r.observe(300_000_000, 30*time.Millisecond)
	r.observe(300_000_000, 24*time.Millisecond)
	r.observe(300_000_000, 900*time.Millisecond) // one outlier moves nothing
	if got := r.estimate(1_000_000_000); got != 100*time.Millisecond {
		t.Fatalf("1 G after 0.08, 0.1 and 3 ns each: %v, want the median 100ms", got)
	}
}
