package tflite

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/internal/smallfirst"
)

// fakeModel is what the fake loader knows of one path.
type fakeModel struct {
	size int64         // mapped bytes
	heap int64         // heap per interpreter
	cold time.Duration // the interpreter stage: what a warm interpreter saves
	// first and steady are what an interpreter's first and later invokes
	// take (simulated: the pool learns from them, nothing sleeps).
	first, steady time.Duration
	fail          error // warm fails with it
	// closing, when set, receives each interpreter's Close, which then
	// blocks until the test sends on it too (a slow C free).
	closing chan struct{}
	// measure: warm reports the loader's heap growth over the warm-up, as
	// the runtime's Warm does (so a free running meanwhile lowers it),
	// instead of heap, and runs the warm-up invoke unless told to skip it
	// (Stages.FirstInvoke > 0). gate, when set, holds the warm-up in the middle of
	// that measurement until the test closes it.
	measure bool
	gate    chan struct{}
	// invokeHeap is what an interpreter's first invoke adds to the heap
	// (XNNPACK packing the weights). invokeGate, when set, holds that first
	// invoke after it allocated until the test closes it.
	invokeHeap int64
	invokeGate chan struct{}
}

// fakeLoader stands in for the runtime under the pool: no C, any size.
type fakeLoader struct {
	mu      sync.Mutex
	models  map[string]*fakeModel
	mapped  int // live mappings
	live    int // live interpreters
	warmups int
	heap    int64 // the simulated C heap: the live interpreters' heaps
	// mappedBytes is the live mappings' size.
	mappedBytes int64
	inWarm      int // warm-ups held at their gate
	closes      int // interpreters closed
}

type fakeMapping struct {
	l *fakeLoader
	m *fakeModel
}

func (m *fakeMapping) mappedBytes() int64 { return m.m.size }
func (m *fakeMapping) Close() error {
	m.l.mu.Lock()
	m.l.mapped--
	m.l.mappedBytes -= m.m.size
	m.l.mu.Unlock()
	return nil
}

type fakeInstance struct {
	l       *fakeLoader
	m       *fakeModel
	invokes *int
}

func (i fakeInstance) Invoke() error {
	*i.invokes++
	if *i.invokes == 1 && i.m.invokeHeap > 0 {
		i.l.mu.Lock()
		i.l.heap += i.m.invokeHeap
		i.l.mu.Unlock()
		if i.m.invokeGate != nil {
			<-i.m.invokeGate
		}
	}
	return nil
}

func (i fakeInstance) invokeTime() time.Duration {
	if *i.invokes == 1 {
		return i.m.first
	}
	return i.m.steady
}

func (fakeInstance) ResetVariables() error { return nil }
func (fakeInstance) Delegates() []string   { return nil }
func (i fakeInstance) Close() {
	if c := i.m.closing; c != nil {
		c <- struct{}{} // started
		<-c             // let go
	}
	i.l.mu.Lock()
	i.l.live--
	i.l.closes++
	i.l.heap -= i.m.heap
	if *i.invokes > 0 {
		i.l.heap -= i.m.invokeHeap
	}
	i.l.mu.Unlock()
}

func newFakeLoader(models map[string]*fakeModel) *fakeLoader {
	return &fakeLoader{models: models}
}

func (l *fakeLoader) model(path string) (*fakeModel, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.models[path]
	if !ok {
		return nil, &Error{Op: "fake", Path: path, Kind: ErrModelNotFound}
	}
	return m, nil
}

func (l *fakeLoader) inspect(path string) (fileInfo, error) {
	m, err := l.model(path)
	if err != nil {
		return fileInfo{}, err
	}
	return fileInfo{size: m.size}, nil
}

func (l *fakeLoader) nonResident(string) int64 { return 0 }

func (l *fakeLoader) mapModel(path string, _ bool) (mapping, time.Duration, time.Duration, error) {
	m, err := l.model(path)
	if err != nil {
		return nil, 0, 0, err
	}
	l.mu.Lock()
	l.mapped++
	l.mappedBytes += m.size
	l.mu.Unlock()
	return &fakeMapping{l: l, m: m}, 0, 0, nil
}

func (l *fakeLoader) warm(mp mapping, _ Options, w WarmOptions) (instance, Stages, int64, error) {
	m := mp.(*fakeMapping).m
	l.mu.Lock()
	l.warmups++
	l.mu.Unlock()
	if m.fail != nil {
		return nil, Stages{}, 0, m.fail
	}
	l.mu.Lock()
	l.live++
	before := l.heap
	l.heap += m.heap
	if m.gate != nil {
		l.inWarm++
		l.mu.Unlock()
		<-m.gate
		l.mu.Lock()
		l.inWarm--
	}
	grew := max(l.heap-before, 0)
	l.mu.Unlock()
	heap, st := m.heap, Stages{Interpreter: m.cold}
	if m.measure {
		heap = grew
		if !w.SkipInvoke && (w.SkipInvokeIf == nil || !w.SkipInvokeIf()) {
			st.FirstInvoke = max(m.first, time.Nanosecond) // a full warm-up
		}
	}
	return fakeInstance{l: l, m: m, invokes: new(int)}, st, heap, nil
}

func (l *fakeLoader) heapInUse() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heap
}

// held is what the loader really holds: the live heap and the mappings.
func (l *fakeLoader) held() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heap + l.mappedBytes
}
func (l *fakeLoader) releaseHeap() {}

func (l *fakeLoader) counts() (mapped, live int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mapped, l.live
}

// fakePool is a pool over a fake loader; each model is registered with its
// heap known (as after calibration), so the accounting is exact.
func fakePool(t *testing.T, o PoolOptions, models map[string]*fakeModel, pinned ...string) (*Pool, *fakeLoader) {
	t.Helper()
	l := newFakeLoader(models)
	p := newPool(o, l)
	t.Cleanup(func() { _ = p.Close() })
	for id, m := range models {
		pin := false
		for _, q := range pinned {
			pin = pin || q == id
		}
		if err := p.Register(ModelSpec{ID: id, Path: id, Pinned: pin, KnownHeap: m.heap}); err != nil {
			t.Fatal(err)
		}
	}
	return p, l
}

func use(t *testing.T, p *Pool, id string) {
	t.Helper()
	l, err := p.Acquire(context.Background(), id)
	if err != nil {
		t.Fatalf("acquire %s: %v", id, err)
	}
	l.Release()
}

// acquireInBackground acquires and releases id on a goroutine of its own
// and sends the Acquire's error when done.
func acquireInBackground(p *Pool, id string) <-chan error {
	done := make(chan error, 1)
	go func() {
		lease, err := p.Acquire(context.Background(), id)
		if err == nil {
			lease.Release()
		}
		done <- err
	}()
	return done
}

func warmIDs(p *Pool) map[string]bool {
	out := map[string]bool{}
	for _, m := range p.Models() {
		if m.Warm {
			out[m.ID] = true
		}
	}
	return out
}

// The budget holds at every step: loads evict what no longer fits, a
// model bigger than the budget is refused without loading, and what is
// accounted matches what the loader holds.
func TestFakePoolBudget(t *testing.T) {
	models := map[string]*fakeModel{
		"a": {size: 40, heap: 10}, "b": {size: 41, heap: 10}, "c": {size: 42, heap: 10}, "huge": {size: 500, heap: 1},
	}
	p, l := fakePool(t, PoolOptions{Budget: 110}, models)
	for _, id := range []string{"a", "b", "c", "a", "c", "b"} {
		use(t, p, id)
		s := p.Stats()
		if s.BytesInUse > s.Budget {
			t.Fatalf("after %s: %d bytes accounted over the budget %d", id, s.BytesInUse, s.Budget)
		}
		var want int64
		for _, m := range p.Models() {
			want += m.Bytes
		}
		if s.BytesInUse != want {
			t.Fatalf("after %s: pool accounts %d, models sum to %d", id, s.BytesInUse, want)
		}
	}
	if w := warmIDs(p); len(w) != 2 {
		t.Fatalf("warm %v: room for two", w)
	}
	before := l.warmups
	if _, err := p.Acquire(context.Background(), "huge"); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("a model over the budget: %v", err)
	}
	if l.warmups != before || p.Stats().Rejected != 1 {
		t.Fatalf("over-budget model was loaded (%d warm-ups) or not counted rejected (%+v)", l.warmups-before, p.Stats())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if mapped, live := l.counts(); mapped != 0 || live != 0 {
		t.Fatalf("after Close: %d mappings, %d interpreters left", mapped, live)
	}
}

// roomWaiters is how many loads wait for room in the budget.
func roomWaiters(p *Pool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.roomWaiters
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A load that needs the room a leased model holds waits for the release,
// within its ctx: the deadline ends the wait with the ctx's error and
// leaves the pool usable; a release lets a waiting load through.
func TestFakePoolWaitsWithCtx(t *testing.T) {
	p, _ := fakePool(t, PoolOptions{Budget: 60}, map[string]*fakeModel{"a": {size: 40, heap: 10}, "b": {size: 41, heap: 10}})
	held, err := p.Acquire(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(short, "b"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b while a is leased: %v, want the deadline", err)
	}
	if s := p.Stats(); s.BytesInUse != 50 || s.Rejected != 0 {
		t.Fatalf("after the timed-out wait: %+v", s)
	}

	done := make(chan error, 1)
	go func() {
		l, err := p.Acquire(context.Background(), "b")
		if err == nil {
			l.Release()
		}
		done <- err
	}()
	waitUntil(t, "b waits for room", func() bool { return roomWaiters(p) == 1 })
	held.Release()
	if err := <-done; err != nil {
		t.Fatalf("b after a was released: %v", err)
	}
	if w := warmIDs(p); !w["b"] || w["a"] {
		t.Fatalf("warm %v, want b (a evicted for it)", w)
	}
	if s := p.Stats(); s.Evictions != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// A second request for a model whose one interpreter is leased waits for
// it (counted as a wait, no second load); cancelling a waiter leaves it.
func TestFakePoolWaitsForTheInterpreter(t *testing.T) {
	p, l := fakePool(t, PoolOptions{}, map[string]*fakeModel{"a": {size: 40, heap: 10}})
	held, err := p.Acquire(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() { _, err := p.Acquire(ctx, "a"); gone <- err }()
	got := make(chan error, 1)
	go func() {
		l, err := p.Acquire(context.Background(), "a")
		if err == nil {
			l.Release()
		}
		got <- err
	}()
	waitUntil(t, "two requests wait", func() bool { n, _ := p.Activity(); return n == 3 })
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	held.Release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Waits != 1 || s.Loads != 1 || l.warmups != 1 {
		t.Fatalf("stats %+v, %d warm-ups: want one wait and one load", s, l.warmups)
	}
}

// A second interpreter of a model that does not fit beside the first is
// not an error once the first is free again: the first serves the request.
func TestFakePoolSecondInterpreterThatDoesNotFitWaitsForTheFirst(t *testing.T) {
	p, l := fakePool(t, PoolOptions{Budget: 55, PerModel: 2}, map[string]*fakeModel{"a": {size: 40, heap: 10}})
	held, err := p.Acquire(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	got := acquireInBackground(p, "a")
	waitUntil(t, "the second request waits for room", func() bool { return roomWaiters(p) == 1 })
	held.Release()
	if err := <-got; err != nil {
		t.Fatalf("second request once the first interpreter was free: %v", err)
	}
	if s := p.Stats(); s.Rejected != 0 || s.Loads != 1 || l.warmups != 1 || s.BytesInUse != 50 {
		t.Fatalf("stats %+v, %d warm-ups: want one load and nothing rejected", s, l.warmups)
	}
}

// Pinned models are never evicted, whatever the policy; when pinned
// models alone hold the budget, a load is refused and says so.
func TestFakePoolPinning(t *testing.T) {
	for _, policy := range Policies {
		models := map[string]*fakeModel{"pin": {size: 40, heap: 10}, "b": {size: 41, heap: 10, cold: time.Second}, "c": {size: 42, heap: 10, cold: time.Second}}
		p, _ := fakePool(t, PoolOptions{Budget: 110, Policy: mustPolicy(t, policy)}, models, "pin")
		for _, id := range []string{"pin", "b", "c", "b", "c"} {
			use(t, p, id)
			if !warmIDs(p)["pin"] {
				t.Fatalf("policy %s: pinned model evicted after %s", policy, id)
			}
		}
		if err := p.Evict("pin"); !errors.Is(err, ErrPinned) {
			t.Fatalf("Evict of a pinned model: %v", err)
		}
		if n := p.ShrinkTo(0, "pressure"); !warmIDs(p)["pin"] || n != 1 {
			t.Fatalf("ShrinkTo evicted %d and left %v: the pinned model must stay", n, warmIDs(p))
		}
	}
	p, _ := fakePool(t, PoolOptions{Budget: 60}, map[string]*fakeModel{"pin": {size: 40, heap: 10}, "b": {size: 41, heap: 10}}, "pin")
	use(t, p, "pin")
	_, err := p.Acquire(context.Background(), "b")
	var pe *Error
	if !errors.Is(err, ErrOverBudget) || !errors.As(err, &pe) || pe.Detail == "" {
		t.Fatalf("room held by a pinned model: %v", err)
	}
	// It says who holds the room, the pinned model and b itself apart.
	if !strings.Contains(pe.Detail, "50 of 60 held: 50 by pinned models, 0 by b itself") {
		t.Fatalf("detail: %q", pe.Detail)
	}
}

// Each policy's order: which warm model leaves for a new one.
func TestFakePoolEvictionOrder(t *testing.T) {
	sec := time.Second
	cases := []struct {
		name   string
		policy string
		models map[string]*fakeModel
		uses   []string // in order; the last one needs room
		victim string
	}{
		{"lru: least recently used leaves", "lru",
			map[string]*fakeModel{"a": {size: 40, heap: 10}, "b": {size: 41, heap: 10}, "c": {size: 15, heap: 10}},
			[]string{"a", "b", "a", "c"}, "b"},
		{"lru: cost does not matter", "lru",
			map[string]*fakeModel{"a": {size: 40, heap: 10, cold: 10 * sec}, "b": {size: 41, heap: 10, cold: sec / 100}, "c": {size: 15, heap: 10}},
			[]string{"a", "b", "c"}, "a"},
		{"cost-aware: the cheap reload leaves, though used last", "cost",
			map[string]*fakeModel{"a": {size: 40, heap: 10, cold: 10 * sec}, "b": {size: 41, heap: 10, cold: sec / 100}, "c": {size: 15, heap: 10}},
			[]string{"a", "b", "c"}, "b"},
		{"cost-aware: demand outweighs cost", "cost",
			map[string]*fakeModel{"a": {size: 40, heap: 10, cold: sec}, "b": {size: 41, heap: 10, cold: 2 * sec}, "c": {size: 15, heap: 10}},
			[]string{"a", "a", "a", "a", "a", "b", "c"}, "b"},
		{"gdsf: the cheap reload leaves, though used last", "gdsf",
			map[string]*fakeModel{"a": {size: 40, heap: 10, cold: 10 * sec}, "b": {size: 41, heap: 10, cold: sec / 100}, "c": {size: 15, heap: 10}},
			[]string{"a", "b", "c"}, "b"},
		{"gdsf: demand outweighs cost", "gdsf",
			map[string]*fakeModel{"a": {size: 40, heap: 10, cold: sec}, "b": {size: 41, heap: 10, cold: 2 * sec}, "c": {size: 15, heap: 10}},
			[]string{"a", "a", "a", "a", "a", "b", "c"}, "b"},
		{"cost-aware: per byte held", "cost",
			map[string]*fakeModel{"a": {size: 20, heap: 10, cold: sec}, "b": {size: 60, heap: 10, cold: sec}, "c": {size: 15, heap: 10}},
			[]string{"a", "b", "c"}, "b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
			var budget int64
			for id, m := range c.models {
				if id != "c" {
					budget += m.size + m.heap
				}
			}
			p, _ := fakePool(t, PoolOptions{Budget: budget, Policy: mustPolicy(t, c.policy), Now: func() time.Time { return now }}, c.models)
			for _, id := range c.uses {
				now = now.Add(time.Second)
				use(t, p, id)
			}
			w := warmIDs(p)
			if w[c.victim] || !w["c"] || len(w) != len(c.models)-1 {
				t.Fatalf("warm %v: want %s evicted for c", w, c.victim)
			}
		})
	}
}

// A load that fails frees what it mapped and counts a failure; the pool
// goes on serving other models.
func TestFakePoolLoadFailureFreesEverything(t *testing.T) {
	boom := errors.New("boom")
	p, l := fakePool(t, PoolOptions{Budget: 200}, map[string]*fakeModel{"bad": {size: 40, heap: 10, fail: boom}, "ok": {size: 41, heap: 10}})
	if _, err := p.Acquire(context.Background(), "bad"); !errors.Is(err, boom) {
		t.Fatalf("failed load: %v", err)
	}
	p.reaper.drain()
	if mapped, live := l.counts(); mapped != 0 || live != 0 || p.Stats().BytesInUse != 0 || p.Stats().LoadFailures != 1 {
		t.Fatalf("after a failed load: %d mapped, %d live, %+v", mapped, live, p.Stats())
	}
	use(t, p, "ok")
}

// A staged version warmed beside the serving one takes over in one step:
// requests in flight finish on the old one, which is freed after them;
// the next request is served warm by the new one; no request fails.
func TestFakePoolPromoteSwapsWarmWithoutAGap(t *testing.T) {
	p, l := fakePool(t, PoolOptions{Budget: 200}, map[string]*fakeModel{"m": {size: 40, heap: 10}, "m@v2": {size: 60, heap: 10}}, "m")
	use(t, p, "m")
	held, err := p.Acquire(context.Background(), "m") // in flight across the swap
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Prewarm(context.Background(), "m@v2"); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.BytesInUse != 120 {
		t.Fatalf("both versions held: %d bytes accounted, want 120", s.BytesInUse)
	}
	busy, err := p.Acquire(context.Background(), "m@v2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Promote("m@v2", "m"); !errors.Is(err, ErrBusy) {
		t.Fatalf("promote while the staged version is leased: %v", err)
	}
	busy.Release()
	if _, err := p.Promote("m@v2", "m"); err != nil {
		t.Fatal(err)
	}
	next, err := p.Acquire(context.Background(), "m")
	if err != nil || !next.Warm {
		t.Fatalf("first request after the swap: warm=%v err=%v", next != nil && next.Warm, err)
	}
	next.Release()
	p.reaper.drain()
	if mapped, _ := l.counts(); mapped != 2 {
		t.Fatalf("%d mappings while the old version is still leased, want 2", mapped)
	}
	held.Release() // the old version drains
	p.reaper.drain()
	if mapped, live := l.counts(); mapped != 1 || live != 1 {
		t.Fatalf("after the drain: %d mappings, %d interpreters, want 1 and 1", mapped, live)
	}
	ms := p.Models()
	if len(ms) != 1 || ms[0].ID != "m" || !ms[0].Pinned || ms[0].Bytes != 70 || p.Stats().BytesInUse != 70 {
		t.Fatalf("after the swap: %+v, %+v", ms, p.Stats())
	}
	if _, err := p.Acquire(context.Background(), "m@v2"); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("the staging id after promotion: %v", err)
	}
}

// GDSF's clock ages out popularity that stopped: a model asked for often,
// early, is evicted once the clock has risen past its priority, while
// cost-aware eviction (without decay in this short run) keeps it for ever.
func TestFakePoolGDSFAgesOutOldPopularity(t *testing.T) {
	models := func() map[string]*fakeModel {
		return map[string]*fakeModel{"old": {size: 40, heap: 10, cold: time.Second}, "b": {size: 41, heap: 10, cold: time.Second},
			"c": {size: 42, heap: 10, cold: time.Second}, "d": {size: 43, heap: 10, cold: time.Second}}
	}
	for _, c := range []struct {
		policy  string
		oldWarm bool
	}{{"cost", true}, {"gdsf", false}} {
		now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
		p, _ := fakePool(t, PoolOptions{Budget: 110, Policy: mustPolicy(t, c.policy), Now: func() time.Time { return now }}, models())
		for range 10 {
			use(t, p, "old")
		}
		for range 6 { // the stream moves on: b, c, d in turn, one slot for them
			for _, id := range []string{"b", "c", "d"} {
				now = now.Add(time.Second)
				use(t, p, id)
			}
		}
		if got := warmIDs(p)["old"]; got != c.oldWarm {
			t.Fatalf("policy %s: the once-popular model warm = %v, want %v (warm: %v)", c.policy, got, c.oldWarm, warmIDs(p))
		}
	}
	for _, name := range append([]string{""}, Policies...) {
		if err := ParsePolicy(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := ParsePolicy("fifo"); err == nil {
		t.Fatal("an unknown policy parsed")
	}
}

func mustPolicy(t *testing.T, name string) Policy {
	t.Helper()
	p, err := NewPolicy(name, PolicyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// With a SmallFirst gate, a large model's load waits while small work
// (a tiny model's registration or load) is in flight, and a tiny model's
// load goes ahead at once: at a start the large loads' reads otherwise
// share the cores and the disk with a 400-byte model's.
func TestLargeLoadWaitsForSmallWork(t *testing.T) {
	gate := &smallfirst.Gate{Max: time.Hour}
	models := map[string]*fakeModel{"large": {size: 4 << 20, heap: 10}, "tiny": {size: 400, heap: 10}}
	p, l := fakePool(t, PoolOptions{SmallFirst: gate}, models)
	registering := gate.Small() // a tiny model's registration in flight
	large := acquireInBackground(p, "large")
	for gate.Waiting() != 1 {
		if mapped, _ := l.counts(); mapped != 0 {
			t.Fatalf("the large model mapped beside small work in flight (%d mappings)", mapped)
		}
		time.Sleep(50 * time.Microsecond)
	}
	use(t, p, "tiny") // does not wait for anything
	if ids := warmIDs(p); !ids["tiny"] || ids["large"] {
		t.Fatalf("warm %v, want tiny alone", ids)
	}
	registering()
	if err := <-large; err != nil {
		t.Fatal(err)
	}
	if ids := warmIDs(p); !ids["large"] {
		t.Fatalf("warm %v: large not loaded once small work ended", ids)
	}
}
