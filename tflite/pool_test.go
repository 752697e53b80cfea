package tflite_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// A real model with an input that has a known answer.
type realCase struct {
	id, model, image, labels string
	want                     int
}

func realCases() []realCase {
	return []realCase{
		{"v1", "mobilenet_v1_0.25_128_quant.tflite", "cat.bmp", "imagenet_labels.txt", 286},
		{"v2", "mobilenet_v2_1.0_224_quant.tflite", "cat.bmp", "imagenet_labels.txt", 286},
		{"bird", "mobilenet_v2_1.0_224_inat_bird_quant.tflite", "bird.bmp", "inat_bird_labels.txt", 659},
		{"lstm", "keras_lstm_mnist_ptq.tflite", "mnist_nine.bmp", "", 9},
	}
}

// prepared holds each case's input bytes, made once with a throwaway
// interpreter so the pool under test sees only requests.
func prepared(t *testing.T, cases []realCase) map[string][]byte {
	t.Helper()
	in := map[string][]byte{}
	for _, c := range cases {
		m, it, _, err := tflite.LoadStaged(tflitetest.Path(t, c.model), tflite.LoadOptions{Warm: tflite.WarmOptions{SkipSteady: true}})
		if err != nil {
			t.Fatal(err)
		}
		x, err := infer.FromFile(tflitetest.Path(t, c.image), it.Inputs()[0], infer.DefaultNormalization, 0)
		if err != nil {
			t.Fatal(err)
		}
		in[c.id] = x.Bytes
		it.Close()
		m.Close()
	}
	return in
}

func classify(ctx context.Context, t testing.TB, p *tflite.Pool, id string, input []byte) (int, *tflite.Lease) {
	l, err := p.Acquire(ctx, id)
	if err != nil {
		t.Errorf("acquire %s: %v", id, err)
		return -1, nil
	}
	top, err := infer.Classify(l.Interpreter(), input, 1, nil)
	if err != nil {
		t.Errorf("classify %s: %v", id, err)
		return -1, l
	}
	return top[0].Index, l
}

// footprints measures each model's warm bytes with an unbounded pool.
func footprints(t *testing.T, cases []realCase) map[string]int64 {
	t.Helper()
	p := tflite.NewPool(tflite.PoolOptions{})
	defer p.Close()
	for _, c := range cases {
		if err := p.Register(tflite.ModelSpec{ID: c.id, Path: tflitetest.Path(t, c.model)}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.Prewarm(context.Background(), c.id); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]int64{}
	for _, m := range p.Models() {
		out[m.ID] = m.Bytes
	}
	return out
}

func TestPoolBudgetEvictionAndPinning(t *testing.T) {
	cases := realCases()
	inputs := prepared(t, cases)
	fp := footprints(t, cases)
	var sum, largest int64
	for _, b := range fp {
		sum += b
		largest = max(largest, b)
	}
	// Room for the pinned model and the largest other one, not for all four.
	budget := fp["v1"] + largest + largest/4
	if budget >= sum {
		t.Fatalf("test setup: budget %d not below sum %d (%v)", budget, sum, fp)
	}
	t.Logf("footprints %v, sum %d, budget %d", fp, sum, budget)

	var mu sync.Mutex
	var evicted []string
	p := tflite.NewPool(tflite.PoolOptions{Budget: budget, OnEvict: func(e tflite.EvictEvent) {
		mu.Lock()
		evicted = append(evicted, e.ModelID)
		mu.Unlock()
	}})
	defer p.Close()
	for _, c := range cases {
		if err := p.Register(tflite.ModelSpec{ID: c.id, Path: tflitetest.Path(t, c.model), Pinned: c.id == "v1"}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for round := range 3 {
		for _, c := range cases {
			got, l := classify(ctx, t, p, c.id, inputs[c.id])
			if got != c.want {
				t.Fatalf("round %d %s: class %d, want %d", round, c.id, got, c.want)
			}
			if s := p.Stats(); s.BytesInUse > budget {
				t.Fatalf("bytes in use %d exceed budget %d", s.BytesInUse, budget)
			}
			l.Release()
		}
	}
	s := p.Stats()
	if s.Evictions == 0 {
		t.Fatalf("no evictions with budget %d < sum %d: %+v", budget, sum, s)
	}
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(evicted, "v1") {
		t.Fatalf("pinned model evicted: %v", evicted)
	}
	if !p.Models()[slices.IndexFunc(p.Models(), func(m tflite.ModelStatus) bool { return m.ID == "v1" })].Warm {
		t.Fatal("pinned model not warm")
	}
	t.Logf("stats %+v", s)
}

func TestPoolConcurrentUnderBudget(t *testing.T) {
	cases := realCases()
	inputs := prepared(t, cases)
	fp := footprints(t, cases)
	budget := fp["v1"] + fp["v2"] + fp["bird"] // lstm must evict something
	goroutines := runtime.NumGoroutine()

	p := tflite.NewPool(tflite.PoolOptions{Budget: budget, PerModel: 2, Interpreter: tflite.Options{Threads: 1}})
	for _, c := range cases {
		if err := p.Register(tflite.ModelSpec{ID: c.id, Path: tflitetest.Path(t, c.model), Pinned: c.id == "v1"}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 12 {
				c := cases[(g+i)%len(cases)]
				got, l := classify(ctx, t, p, c.id, inputs[c.id])
				if l == nil {
					return
				}
				if got != c.want {
					t.Errorf("%s: class %d, want %d", c.id, got, c.want)
				}
				if s := p.Stats(); s.BytesInUse > budget {
					t.Errorf("bytes in use %d exceed budget %d", s.BytesInUse, budget)
				}
				l.Release()
			}
		}()
	}
	wg.Wait()
	s := p.Stats()
	t.Logf("stats %+v", s)
	if s.Hits+s.Waits+s.Misses != 48 {
		t.Fatalf("hits+waits+misses = %d, want 48", s.Hits+s.Waits+s.Misses)
	}
	if s.Leased != 0 {
		t.Fatalf("%d interpreters still leased", s.Leased)
	}
	p.Close()
	if s := p.Stats(); s.BytesInUse != 0 || s.Interpreters != 0 {
		t.Fatalf("after Close: %+v", s)
	}
	waitGoroutines(t, goroutines)
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines %d > %d:\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPoolWaitHonoursContext(t *testing.T) {
	p := tflite.NewPool(tflite.PoolOptions{})
	defer p.Close()
	if err := p.Register(tflite.ModelSpec{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")}); err != nil {
		t.Fatal(err)
	}
	l, err := p.Acquire(context.Background(), "xor")
	if err != nil {
		t.Fatal(err)
	}
	if l.Warm {
		t.Fatal("first lease claims to be warm")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(ctx, "xor"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("busy acquire: %v, want deadline exceeded", err)
	}
	// A waiter is served by the release.
	got := make(chan *tflite.Lease)
	go func() {
		l2, err := p.Acquire(context.Background(), "xor")
		if err != nil {
			t.Error(err)
		}
		got <- l2
	}()
	l.Release()
	l.Release() // idempotent
	l2 := <-got
	if !l2.Warm {
		t.Fatal("second lease not warm")
	}
	l2.Release()
	if s := p.Stats(); s.Loads != 1 || s.Misses != 1 || s.Hits+s.Waits != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPoolBadModelsLeaveItUnchanged(t *testing.T) {
	dir := t.TempDir()
	trunc := copyWith(t, tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite"), filepath.Join(dir, "t.tflite"), func(b []byte) []byte { return b[:len(b)/3] })
	p := tflite.NewPool(tflite.PoolOptions{})
	defer p.Close()
	for id, path := range map[string]string{
		"good": tflitetest.Path(t, "xor_model.tflite"), "trunc": trunc,
		"customop": tflitetest.Path(t, "model_invoking_error.tflite"),
		"edgetpu":  tflitetest.Path(t, "mobilenet_v1_0.25_128_quant_edgetpu.tflite"),
	} {
		if err := p.Register(tflite.ModelSpec{ID: id, Path: path}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if _, _, err := p.Prewarm(ctx, "good"); err != nil {
		t.Fatal(err)
	}
	before := p.Stats()
	for id, want := range map[string]*tflite.Kind{"trunc": tflite.ErrModelTruncated, "customop": tflite.ErrUnresolvedOp, "edgetpu": tflite.ErrNeedsDelegate} {
		if _, err := p.Acquire(ctx, id); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %s", id, err, want.Code())
		}
	}
	if _, err := p.Acquire(ctx, "nope"); !errors.Is(err, tflite.ErrUnknownModel) {
		t.Errorf("unknown id: %v", err)
	}
	after := p.Stats()
	if after.BytesInUse != before.BytesInUse || after.WarmModels != 1 || after.LoadFailures != 3 {
		t.Fatalf("pool changed: before %+v after %+v", before, after)
	}
	l, err := p.Acquire(ctx, "good")
	if err != nil || !l.Warm {
		t.Fatalf("good model no longer warm: %v", err)
	}
	l.Release()
	// Unregistered files are refused at registration with their kind.
	if err := p.Register(tflite.ModelSpec{ID: "gone", Path: filepath.Join(dir, "missing.tflite")}); !errors.Is(err, tflite.ErrModelNotFound) {
		t.Fatalf("register missing: %v", err)
	}
}

func TestPoolAdmissionBeforeLoading(t *testing.T) {
	p := tflite.NewPool(tflite.PoolOptions{Budget: 1 << 20})
	defer p.Close()
	// A footprint known from an earlier run says this cannot fit: refuse
	// without mapping or warming anything.
	if err := p.Register(tflite.ModelSpec{ID: "v2", Path: tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite"), KnownHeap: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Acquire(context.Background(), "v2"); !errors.Is(err, tflite.ErrOverBudget) {
		t.Fatalf("acquire: %v, want over budget", err)
	}
	if s := p.Stats(); s.Loads != 0 || s.LoadFailures != 0 || s.Rejected != 1 || s.BytesInUse != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPoolWaitsForBusyModelToMakeRoom(t *testing.T) {
	fp := footprints(t, realCases()[:2])
	// Room for either model alone, not both (heap measurements vary a little
	// between loads, so leave half the small one as margin).
	p := tflite.NewPool(tflite.PoolOptions{Budget: max(fp["v1"], fp["v2"]) + min(fp["v1"], fp["v2"])/2})
	defer p.Close()
	for _, c := range realCases()[:2] {
		if err := p.Register(tflite.ModelSpec{ID: c.id, Path: tflitetest.Path(t, c.model)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	l1, err := p.Acquire(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	// The request's own invoke is the first: it completes the footprint.
	if err := l1.Invoke(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(short, "v2"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("v2 while v1 leased: %v, want to wait until the deadline", err)
	}
	done := make(chan error, 1)
	go func() {
		l2, err := p.Acquire(ctx, "v2")
		if err == nil {
			l2.Release()
		}
		done <- err
	}()
	// Release only once v2 waits for room, so the waiting path is what runs.
	deadline := time.Now().Add(10 * time.Second)
	for tflite.RoomWaitersForTest(p) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("v2 never waited for room")
		}
		time.Sleep(time.Millisecond)
	}
	l1.Release()
	if err := <-done; err != nil {
		t.Fatalf("v2 after v1 released: %v", err)
	}
	if s := p.Stats(); s.Evictions != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPoolEvictPinAndBudgetChange(t *testing.T) {
	p := tflite.NewPool(tflite.PoolOptions{})
	defer p.Close()
	ctx := context.Background()
	for _, c := range realCases()[:2] {
		if err := p.Register(tflite.ModelSpec{ID: c.id, Path: tflitetest.Path(t, c.model)}); err != nil {
			t.Fatal(err)
		}
		if _, loaded, err := p.Prewarm(ctx, c.id); err != nil || !loaded {
			t.Fatalf("prewarm %s: %v loaded=%v", c.id, err, loaded)
		}
	}
	if _, loaded, _ := p.Prewarm(ctx, "v1"); loaded {
		t.Fatal("prewarm of a warm model loaded again")
	}
	if err := p.SetPinned("v1", true); err != nil {
		t.Fatal(err)
	}
	if err := p.Evict("v1"); !errors.Is(err, tflite.ErrPinned) {
		t.Fatalf("evict pinned: %v", err)
	}
	l, _ := p.Acquire(ctx, "v2")
	if err := p.Evict("v2"); !errors.Is(err, tflite.ErrBusy) {
		t.Fatalf("evict leased: %v", err)
	}
	l.Release()
	// Shrinking the budget below everything evicts all but the pinned one
	// and says the pinned one alone is over.
	if err := p.SetBudget(1); !errors.Is(err, tflite.ErrOverBudget) {
		t.Fatalf("set budget: %v", err)
	}
	if s := p.Stats(); s.WarmModels != 1 || s.Evictions != 1 {
		t.Fatalf("stats %+v", s)
	}
	if err := p.SetPinned("v1", false); err != nil {
		t.Fatal(err)
	}
	if err := p.Evict("v1"); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.BytesInUse != 0 || s.WarmModels != 0 {
		t.Fatalf("stats %+v", s)
	}
	p.Close()
	if _, err := p.Acquire(ctx, "v1"); !errors.Is(err, tflite.ErrPoolClosed) {
		t.Fatalf("acquire after close: %v", err)
	}
}

func TestPoolLeaseOutlivesClose(t *testing.T) {
	p := tflite.NewPool(tflite.PoolOptions{})
	if err := p.Register(tflite.ModelSpec{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")}); err != nil {
		t.Fatal(err)
	}
	l, err := p.Acquire(context.Background(), "xor")
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	// Still usable until released, then freed.
	if err := l.Interpreter().Invoke(); err != nil {
		t.Fatal(err)
	}
	l.Release()
	if s := p.Stats(); s.BytesInUse != 0 || s.Interpreters != 0 {
		t.Fatalf("after release: %+v", s)
	}
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}

func TestPoolTrimKeepsMapping(t *testing.T) {
	now := time.Unix(1000, 0)
	p := tflite.NewPool(tflite.PoolOptions{Now: func() time.Time { return now }})
	defer p.Close()
	ctx := context.Background()
	for _, c := range realCases()[:2] {
		if err := p.Register(tflite.ModelSpec{ID: c.id, Path: tflitetest.Path(t, c.model), Pinned: c.id == "v1"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.Prewarm(ctx, c.id); err != nil {
			t.Fatal(err)
		}
	}
	before := p.Stats().BytesInUse
	now = now.Add(time.Hour)
	if n := p.Trim(10*time.Minute, true); n != 1 {
		t.Fatalf("trimmed %d, want 1 (the unpinned one)", n)
	}
	var v2 tflite.ModelStatus
	for _, m := range p.Models() {
		if m.ID == "v2" {
			v2 = m
		}
	}
	if v2.Interpreters != 0 || v2.Warm || !v2.Mapped || v2.Bytes <= 0 || p.Stats().BytesInUse >= before || p.IsWarm("v2") || !p.IsWarm("v1") {
		t.Fatalf("after trim: %+v, bytes %d→%d", v2, before, p.Stats().BytesInUse)
	}
	// The next request builds an interpreter on the kept mapping.
	rep, loaded, err := p.Prewarm(ctx, "v2")
	if err != nil || !loaded || rep.Stages.Map != 0 {
		t.Fatalf("rewarm: %+v %v %v", rep.Stages, loaded, err)
	}
	now = now.Add(time.Hour)
	p.Trim(10*time.Minute, false)
	if s := p.Stats(); s.WarmModels != 1 || s.Evictions != 1 {
		t.Fatalf("trim without mapping: %+v", s)
	}
}

func TestPoolRequestSkipsWarmUpWhenFootprintKnown(t *testing.T) {
	p := tflite.NewPool(tflite.PoolOptions{})
	defer p.Close()
	ctx := context.Background()
	path := tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite")
	// Unknown footprint: a request-triggered load runs no warm-up invoke
	// either (as a naive loader would not); the request's first invoke
	// through the lease measures the rest of the footprint.
	if err := p.Register(tflite.ModelSpec{ID: "fresh", Path: path}); err != nil {
		t.Fatal(err)
	}
	l, err := p.Acquire(ctx, "fresh")
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Models()[0].LastLoad.Stages; st.FirstInvoke != 0 {
		t.Fatalf("fresh model loaded with a warm-up invoke before the request's own: %+v", st)
	}
	if err := l.Invoke(); err != nil {
		t.Fatal(err)
	}
	l.Release()
	// What the request's invoke measured matches a full warm-up's
	// measurement (mobilenet_v2 packs about 2 MiB of weights at the first
	// invoke, which a pre-invoke measurement would miss).
	ref := tflite.NewPool(tflite.PoolOptions{})
	defer ref.Close()
	ref.Register(tflite.ModelSpec{ID: "ref", Path: path})
	full, _, err := ref.Prewarm(ctx, "ref")
	if err != nil {
		t.Fatal(err)
	}
	got := p.Models()[0].Bytes - full.Footprint.Mapped
	if want := full.Footprint.Heap; got < want*9/10 || got > want*11/10 {
		t.Fatalf("request-measured heap %d, full warm-up measured %d", got, want)
	}
	// Known (calibrated) footprint and steady time: the request's own
	// invoke is the first; the accounted heap is the known one at least.
	if err := p.Register(tflite.ModelSpec{ID: "known", Path: path, KnownHeap: 5 << 20, KnownSteady: 30 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	l, err = p.Acquire(ctx, "known")
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	for _, m := range p.Models() {
		if m.ID == "known" && (m.LastLoad.Stages.FirstInvoke != 0 || m.LastLoad.Stages.Steady != 30*time.Millisecond || m.LastLoad.Footprint.Heap < 5<<20) {
			t.Fatalf("known model: %+v", m.LastLoad)
		}
	}
}

// With real models under a budget that forces evictions, a pinned model
// stays warm under every policy, and the budget holds.
func TestPinnedModelsSurviveEveryPolicy(t *testing.T) {
	cases := realCases()
	fp := footprints(t, cases)
	in := prepared(t, cases)
	for _, name := range tflite.Policies {
		policy, err := tflite.NewPolicy(name, tflite.PolicyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Room for the pinned LSTM and one of the others at a time.
		budget := fp["lstm"] + max(fp["v1"], fp["v2"], fp["bird"]) + fp["v1"]/2
		p := tflite.NewPool(tflite.PoolOptions{Budget: budget, Policy: policy})
		for _, c := range cases {
			if err := p.Register(tflite.ModelSpec{ID: c.id, Path: tflitetest.Path(t, c.model), Pinned: c.id == "lstm"}); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := p.Prewarm(context.Background(), "lstm"); err != nil {
			t.Fatal(err)
		}
		for i := range 24 {
			c := cases[i%len(cases)]
			l, err := p.Acquire(context.Background(), c.id)
			if err != nil {
				t.Fatalf("policy %s, %s: %v", name, c.id, err)
			}
			if err := l.Interpreter().SetInput(0, in[c.id]); err != nil {
				t.Fatal(err)
			}
			if err := l.Invoke(); err != nil {
				t.Fatal(err)
			}
			l.Release()
			p.Expire() // keep-alive and pre-warm gaps never free a pinned model either
			if !p.IsWarm("lstm") {
				t.Fatalf("policy %s: the pinned model was evicted at request %d", name, i)
			}
			if s := p.Stats(); s.BytesInUse > s.Budget {
				t.Fatalf("policy %s: %d bytes over the budget %d", name, s.BytesInUse, s.Budget)
			}
		}
		if s := p.Stats(); s.Evictions == 0 {
			t.Fatalf("policy %s: the budget forced no eviction: %+v", name, s)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
