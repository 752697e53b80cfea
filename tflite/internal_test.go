package tflite

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/edge-agent/edge-agent/tflite/tflitetest"
	tfl "github.com/tphakala/go-tflite"
)

// The explicit-free shim reads go-tflite internals; this fails first if a
// go-tflite upgrade moves them.
func TestBindingLayout(t *testing.T) {
	for _, c := range []struct {
		obj   any
		field string
	}{
		{&tfl.Model{}, "m"},
		{&tfl.InterpreterOptions{}, "o"},
		{&tfl.Interpreter{}, "i"},
	} {
		if _, _, err := bindingFields(c.obj, c.field); err != nil {
			t.Errorf("%T: %v", c.obj, err)
		}
	}
	if _, _, err := bindingFields(&struct{ x int }{}, "m"); err == nil {
		t.Error("a foreign struct passed the layout check")
	}
}

// Without explicit freeing the C heap would grow until the GC happened to
// run the cleanups; with it, it returns to where it was.
func TestExplicitFreeReturnsHeap(t *testing.T) {
	p := tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")
	warm := func() {
		m, it, _, err := LoadStaged(p, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		it.Close()
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	warm() // first-use allocations of the runtime itself
	base := heapInUse()
	for range 30 {
		warm()
	}
	if grew := heapInUse() - base; grew > 256<<10 {
		t.Fatalf("C heap grew %d bytes over 30 load/free cycles", grew)
	}
}

func TestModelCloseRefusedWhileInterpretersOpen(t *testing.T) {
	m, it, _, err := LoadStaged(tflitetest.Path(t, "xor_model.tflite"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err == nil {
		t.Fatal("model closed under a live interpreter")
	}
	it.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCostAwareVictim(t *testing.T) {
	now := time.Unix(1e6, 0)
	mk := func(id string, cold time.Duration, bytes int64, demand float64, used time.Duration) *entry {
		return &entry{spec: ModelSpec{ID: id}, model: &Model{}, cold: cold, bytes: bytes,
			demand: demand, demandAt: now, lastUsed: now.Add(-used), changed: make(chan struct{})}
	}
	// "slow" was used longest ago but its warmth saves the most per byte;
	// "cheap" costs little to reload, so it goes first under CostAware.
	entries := map[string]*entry{
		"slow":  mk("slow", 900*time.Millisecond, 4<<20, 3, time.Hour),
		"cheap": mk("cheap", 5*time.Millisecond, 4<<20, 3, time.Minute),
		"big":   mk("big", 300*time.Millisecond, 64<<20, 3, 2*time.Minute),
	}
	for _, c := range []struct {
		policy string
		want   string
	}{{"cost", "cheap"}, {"lru", "slow"}} {
		p := NewPool(PoolOptions{Policy: mustPolicy(t, c.policy), Now: func() time.Time { return now }})
		p.entries = entries
		v, _ := p.victimLocked(nil, nil)
		if v == nil || v.spec.ID != c.want {
			t.Errorf("policy %s evicts %v, want %s", c.policy, v, c.want)
		}
	}
	// Pinned, leased and loading models are never chosen.
	entries["cheap"].spec.Pinned = true
	entries["big"].leased = 1
	entries["slow"].loading = true
	p0 := NewPool(PoolOptions{Now: func() time.Time { return now }})
	p0.entries = entries
	if v, busy := p0.victimLocked(nil, nil); v != nil || !busy {
		t.Fatalf("victim %v busy=%v, want none and busy", v, busy)
	}
	entries["slow"].loading = false
	p := NewPool(PoolOptions{Now: func() time.Time { return now }})
	p.entries = entries
	if v, busy := p.victimLocked(nil, nil); v == nil || v.spec.ID != "slow" || !busy {
		t.Fatalf("victim %v busy=%v, want slow and busy", v, busy)
	}
}

func TestDelegateLibraryErrors(t *testing.T) {
	m, err := LoadModel(tflitetest.Path(t, "xor_model.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct {
		lib, want string
	}{
		// TFLite's own loader would hand back a delegate without functions
		// for both and crash the interpreter; these must be clean errors.
		{"/nonexistent/libedgetpu.so.1", "No such file"},
		{"libm.so.6", "not a TFLite delegate plugin"},
	} {
		base := heapInUse()
		for range 20 {
			it, err := NewInterpreter(m, Options{Delegates: []DelegateSpec{{Name: "edgetpu", Library: c.lib}}})
			if it != nil || !errors.Is(err, ErrDelegate) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%s: it=%v err=%v, want %s mentioning %q", c.lib, it, err, ErrDelegate.Code(), c.want)
			}
		}
		if grew := heapInUse() - base; grew > 64<<10 {
			t.Errorf("%s: C heap grew %d bytes over 20 failed creations", c.lib, grew)
		}
	}
	if n := m.live.Load(); n != 0 {
		t.Fatalf("%d interpreters counted live after failures", n)
	}
}

// Free releases what go-tflite made directly (the bench's naive baseline):
// the interpreter, its options, the model and the C copy of its bytes.
func TestFreeReleasesGoTFLiteObjects(t *testing.T) {
	p := tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	run := func() {
		m := tfl.NewModel(data)
		o := tfl.NewInterpreterOptions()
		ip := tfl.NewInterpreter(m, o)
		if m == nil || ip == nil || ip.AllocateTensors() != tfl.OK || ip.Invoke() != tfl.OK {
			t.Fatal("go-tflite could not run the model")
		}
		if err := Free(ip, o, m); err != nil {
			t.Fatal(err)
		}
	}
	run()
	base := heapInUse()
	for range 20 {
		run()
	}
	if grew := heapInUse() - base; grew > 256<<10 {
		t.Fatalf("C heap grew %d bytes over 20 load/free cycles", grew)
	}
	if err := Free("not a binding"); !errors.Is(err, ErrBinding) {
		t.Fatalf("Free of a string: %v, want %s", err, ErrBinding.Code())
	}
}

// When the interpreter cannot be detached (a go-tflite layout change), its
// options, delegates and error log must not be freed under it: Close
// leaks them all and says so, and the naive baseline does the same.
func TestFailedDetachFreesNothingUnderALiveInterpreter(t *testing.T) {
	var calls []string
	detachFn = func(obj any, field string) (unsafe.Pointer, error) {
		calls = append(calls, field)
		if field == "i" {
			return nil, fmt.Errorf("%w: simulated layout change", ErrBinding)
		}
		return detach(obj, field)
	}
	defer func() { detachFn = detach }()
	before := Leaked()

	m, it, _, err := LoadStaged(tflitetest.Path(t, "xor_model.tflite"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	it.Close()
	if !slices.Equal(calls, []string{"i"}) {
		t.Fatalf("after a failed interpreter detach, Close detached %v (options freed under a live interpreter)", calls)
	}
	it.Close() // a second Close does nothing
	if len(calls) != 1 {
		t.Fatalf("second Close detached again: %v", calls)
	}
	if err := m.Close(); err != nil { // the model itself is not the interpreter: it may go
		t.Fatal(err)
	}

	// Free does the same for objects made by go-tflite directly: nothing
	// after the interpreter is freed, and all three are counted leaked.
	calls = nil
	gm := tfl.NewModelFromFile(tflitetest.Path(t, "xor_model.tflite"))
	gopts := tfl.NewInterpreterOptions()
	gip := tfl.NewInterpreter(gm, gopts)
	if err := Free(gip, gopts, gm); !errors.Is(err, ErrBinding) {
		t.Fatalf("Free after a failed detach: %v", err)
	}
	if !slices.Equal(calls, []string{"i"}) {
		t.Fatalf("Free: after a failed interpreter detach, detached %v", calls)
	}
	if got := Leaked() - before; got != 4 {
		t.Fatalf("Leaked counted %d, want 4", got)
	}
}

// A model's cold cost counts reading what was not in the page cache at the
// storage's read rate when that is more than the page-in measured.
func TestReloadCostCountsStorageReads(t *testing.T) {
	ws := Stages{Map: time.Millisecond, PageIn: 2 * time.Millisecond, Interpreter: time.Millisecond, Allocate: time.Millisecond, FirstInvoke: 10 * time.Millisecond, Steady: 8 * time.Millisecond}
	for _, c := range []struct {
		nonResident int64
		rate        float64
		want        time.Duration
	}{
		{0, 25e6, 7 * time.Millisecond},                // all cached: as measured
		{25e6, 0, 7 * time.Millisecond},                // rate unknown: as measured
		{25e6, 25e6, time.Second + 5*time.Millisecond}, // 25 MB at 25 MB/s replaces the 2 ms page-in
		{1000, 25e6, 7 * time.Millisecond},             // less than measured: as measured
	} {
		if got := ws.Saved() + storageExtra(ws.PageIn, c.nonResident, c.rate); got != c.want {
			t.Errorf("%d bytes at %.0f B/s: %s, want %s", c.nonResident, c.rate, got, c.want)
		}
	}
}

// scanFile reads a mapping: a file cut short after its size was read
// faults on the missing pages. The scan then knows nothing (a load of
// that file fails on its own); the process does not die of SIGBUS. The
// whole file, scanned the same way, has its work.
func TestScanFileSurvivesATruncatedMapping(t *testing.T) {
	src, err := os.ReadFile(tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	p := t.TempDir() + "/cut.tflite"
	if err := os.WriteFile(p, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, work := scanFile(p, int64(len(src))); work <= 0 {
		t.Fatalf("whole file: work %d", work)
	}
	if err := os.Truncate(p, 4096); err != nil {
		t.Fatal(err)
	}
	vars, work := scanFile(p, int64(len(src))) // the size read before the cut
	if vars || work != 0 {
		t.Fatalf("truncated under the scan: vars %v work %d, want nothing known", vars, work)
	}
}
