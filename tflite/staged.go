package tflite

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"time"
)

// Stages are the timed steps of a cold start, in the order they run. A
// zero duration means the stage did not run (e.g. the model was already
// mapped).
type Stages struct {
	Map         time.Duration // TfLiteModelCreateFromFile: mmap + flatbuffer verify
	PageIn      time.Duration // reading the file so its pages are resident
	Interpreter time.Duration // TfLiteInterpreterCreate (op resolution, delegates)
	Allocate    time.Duration // AllocateTensors (arena planning, weight packing)
	FirstInvoke time.Duration // the warm-up invoke
	Steady      time.Duration // a following invoke: what a warm request costs
}

// Cold is the time from nothing to the first result.
func (s Stages) Cold() time.Duration {
	return s.Map + s.PageIn + s.Interpreter + s.Allocate + s.FirstInvoke
}

// Saved is what a warm interpreter saves a request: every load stage, plus
// the first invoke's penalty over a steady one. Only the penalty is clamped
// at zero (a noisy measurement can put the first below the steady), so a
// model's load cost is never measured away.
func (s Stages) Saved() time.Duration {
	return s.Map + s.PageIn + s.Interpreter + s.Allocate + max(s.FirstInvoke-s.Steady, 0)
}

// stagesJSON is the published form: milliseconds with microsecond precision.
type stagesJSON struct {
	MapMs         float64 `json:"map_ms"`
	PageInMs      float64 `json:"page_in_ms"`
	InterpreterMs float64 `json:"interpreter_ms"`
	AllocateMs    float64 `json:"allocate_ms"`
	FirstInvokeMs float64 `json:"first_invoke_ms"`
	SteadyMs      float64 `json:"steady_invoke_ms"`
	ColdMs        float64 `json:"cold_total_ms"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
func fromMs(v float64) time.Duration {
	return time.Duration(math.Round(v * 1e6))
}

func (s Stages) MarshalJSON() ([]byte, error) {
	return json.Marshal(stagesJSON{
		MapMs: ms(s.Map), PageInMs: ms(s.PageIn), InterpreterMs: ms(s.Interpreter),
		AllocateMs: ms(s.Allocate), FirstInvokeMs: ms(s.FirstInvoke), SteadyMs: ms(s.Steady),
		ColdMs: ms(s.Cold()),
	})
}

func (s *Stages) UnmarshalJSON(b []byte) error {
	var j stagesJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Stages{Map: fromMs(j.MapMs), PageIn: fromMs(j.PageInMs), Interpreter: fromMs(j.InterpreterMs),
		Allocate: fromMs(j.AllocateMs), FirstInvoke: fromMs(j.FirstInvokeMs), Steady: fromMs(j.SteadyMs)}
	return nil
}

// Footprint is what keeping a model warm costs in memory.
//
// Heap is measured, not estimated: the C heap's in-use bytes (glibc
// mallinfo2: uordblks + hblkhd, all arenas) after the warm-up invoke minus
// before the interpreter was created. That covers the tensor arena, XNNPACK's
// repacked weights and kernel scratch, and it is not fooled by freed memory
// being reused, which an RSS delta is. Loads are serialised so deltas do not
// mix. Mapped is the model file, resident in the page cache once warm and
// shared by all interpreters of the model.
type Footprint struct {
	Mapped int64 `json:"mapped_bytes"`
	Heap   int64 `json:"heap_bytes"`
}

// Total is the bytes charged against a budget.
func (f Footprint) Total() int64 { return f.Mapped + f.Heap }

func (f Footprint) MarshalJSON() ([]byte, error) {
	type plain Footprint
	return json.Marshal(struct {
		plain
		Total int64 `json:"total_bytes"`
	}{plain(f), f.Total()})
}

// UnmarshalJSON reads what MarshalJSON writes; total_bytes is derived.
func (f *Footprint) UnmarshalJSON(b []byte) error {
	type plain Footprint
	var v struct {
		plain
		Total int64 `json:"total_bytes"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = Footprint(v.plain)
	return nil
}

// WarmOptions tune a warm-up.
type WarmOptions struct {
	// Input is written to input 0 before the warm-up invoke; nil means zeros.
	Input []byte
	// InputFunc, when set, makes input 0's bytes from its final description
	// (after allocation); it takes precedence over Input. Its error ends the
	// warm-up.
	InputFunc func(TensorInfo) ([]byte, error)
	// SkipSteady skips the extra invoke that measures steady latency.
	SkipSteady bool
	// SkipInvoke stops after allocation: the caller's own request is the
	// first invoke (and the heap is measured before it).
	SkipInvoke bool
	// SkipInvokeIf, when set, is asked after allocation: true stops there
	// as SkipInvoke does (a request started waiting for this interpreter,
	// and its own invoke should be the first). Stages.FirstInvoke is then 0.
	SkipInvokeIf func() bool
	// Turn, when set, is called before each warm-up invoke and the func
	// it returns after it: the pool's invoke gate, so a warm-up takes its
	// turn with requests' invokes (invokeGate).
	Turn func() (done func())
}

// invokeInTurn runs one warm-up invoke within w's turn, timing the invoke
// itself.
func (w WarmOptions) invokeInTurn(it *Interpreter) (time.Duration, error) {
	if w.Turn != nil {
		defer w.Turn()()
	}
	t := time.Now()
	err := it.Invoke()
	return time.Since(t), err
}

// Warm creates an interpreter on m, allocates it and runs the warm-up
// invoke, timing each stage and measuring the heap it holds.
func Warm(m *Model, o Options, w WarmOptions) (*Interpreter, Stages, int64, error) {
	var st Stages
	before := heapInUse()
	t := time.Now()
	it, err := NewInterpreter(m, o)
	if err != nil {
		return nil, st, 0, err
	}
	st.Interpreter = time.Since(t)

	t = time.Now()
	if err := it.AllocateTensors(); err != nil {
		it.Close()
		return nil, st, 0, err
	}
	st.Allocate = time.Since(t)
	if w.SkipInvoke || (w.SkipInvokeIf != nil && w.SkipInvokeIf()) {
		return it, st, max(heapInUse()-before, 0), nil
	}

	input := w.Input
	if w.InputFunc != nil && len(it.Inputs()) > 0 {
		if input, err = w.InputFunc(it.Inputs()[0]); err != nil {
			it.Close()
			return nil, st, 0, err
		}
	}
	if input != nil {
		if err := it.SetInput(0, input); err != nil {
			it.Close()
			return nil, st, 0, err
		}
	} else {
		it.ZeroInputs()
	}
	if st.FirstInvoke, err = w.invokeInTurn(it); err != nil {
		it.Close()
		return nil, st, 0, err
	}
	heap := max(heapInUse()-before, 0)

	if !w.SkipSteady {
		if st.Steady, err = w.invokeInTurn(it); err != nil {
			it.Close()
			return nil, st, 0, err
		}
	}
	return it, st, heap, nil
}

// PageIn reads the whole file once, so the mapped model's pages are in the
// page cache before the first invoke would fault them in one by one. It
// faults the file in through a mapping of its own: no copy, and no buffer
// on the Go heap (a 1 MiB read buffer per load kept a 400-byte model's
// request 2–4 ms in the Go runtime, a trace showed). A file of HugeMin or
// more is mapped with MADV_HUGEPAGE, so what was not cached yet comes in
// as 2 MiB folios (see hugepages.go); what was cached stays as it is.
func PageIn(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("page in %q: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("page in %q: %w", path, err)
	}
	if fi.Size() == 0 {
		return nil
	}
	if _, err := populate(f, fi.Size(), fi.Size() >= HugeMin, false); err != nil {
		return fmt.Errorf("page in %q: %w", path, err)
	}
	return nil
}

// LoadReport is the measured cold start of one model.
type LoadReport struct {
	Stages    Stages    `json:"stages"`
	Footprint Footprint `json:"footprint"`
	Threads   int       `json:"threads"`
	Delegates []string  `json:"delegates"`
	// FromStorage is how much of the file was not in the page cache when
	// the pool mapped it (read from storage by this load).
	FromStorage int64 `json:"from_storage_bytes,omitempty"`
}

// LoadOptions tune LoadStaged.
type LoadOptions struct {
	Interpreter Options
	Warm        WarmOptions
	// PageIn reads the file before creating the interpreter.
	PageIn bool
}

// LoadStaged maps the model at path and warms one interpreter on it, timing
// every stage. The caller owns both results and closes the interpreter
// before the model.
func LoadStaged(path string, o LoadOptions) (*Model, *Interpreter, LoadReport, error) {
	rep := LoadReport{Threads: o.Interpreter.Threads, Delegates: []string{}}
	t := time.Now()
	m, err := LoadModel(path)
	if err != nil {
		return nil, nil, rep, err
	}
	rep.Stages.Map = time.Since(t)
	if o.PageIn {
		t = time.Now()
		if err := PageIn(path); err != nil {
			_ = m.Close()
			return nil, nil, rep, err
		}
		rep.Stages.PageIn = time.Since(t)
	}
	it, st, heap, err := Warm(m, o.Interpreter, o.Warm)
	if err != nil {
		_ = m.Close()
		return nil, nil, rep, err
	}
	st.Map, st.PageIn = rep.Stages.Map, rep.Stages.PageIn
	rep.Stages = st
	rep.Footprint = Footprint{Mapped: m.Size, Heap: heap}
	rep.Delegates = append(rep.Delegates, it.Delegates()...)
	return m, it, rep, nil
}
