package tflite

import (
	"fmt"
	"os"
	"sync"
	"time"

	tfl "github.com/tphakala/go-tflite"
)

// Naive is the loop a user writes by hand around go-tflite, kept as the
// benchmark's baseline: read the file into memory, NewModel (which copies
// it into the C heap), one interpreter behind a mutex, loaded at the first
// request. It frees explicitly on Close, as the agent does, so the two
// differ only in how they load and serve.
type Naive struct {
	path    string
	threads int

	// mu guards everything below: one request at a time.
	mu    sync.Mutex
	model *tfl.Model
	opts  *tfl.InterpreterOptions
	ip    *tfl.Interpreter
	first NaiveStages
}

// NaiveStages time the naive first request.
type NaiveStages struct {
	Read, Model, Interpreter, Allocate, FirstInvoke time.Duration
}

// NewNaive prepares a baseline for the model at path; nothing is loaded.
func NewNaive(path string, threads int) *Naive { return &Naive{path: path, threads: threads} }

// Infer runs one request, loading the model first if this is the first.
func (n *Naive) Infer(input []byte, out []byte) ([]byte, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	first := n.ip == nil
	if first {
		if err := n.load(); err != nil {
			return out, err
		}
	}
	in := n.ip.GetInputTensor(0)
	if int(in.ByteSize()) != len(input) {
		return out, &Error{Op: "naive infer", Path: n.path, Kind: ErrInputSize}
	}
	in.CopyFromBuffer(input)
	t := time.Now()
	if n.ip.Invoke() != tfl.OK {
		return out, &Error{Op: "naive invoke", Path: n.path, Kind: ErrInvoke}
	}
	if first {
		n.first.FirstInvoke = time.Since(t)
	}
	o := n.ip.GetOutputTensor(0)
	if cap(out) < int(o.ByteSize()) {
		out = make([]byte, o.ByteSize())
	}
	out = out[:o.ByteSize()]
	o.CopyToBuffer(out)
	return out, nil
}

func (n *Naive) load() error {
	t := time.Now()
	data, err := os.ReadFile(n.path)
	if err != nil {
		return fmt.Errorf("naive load: %w", err)
	}
	n.first.Read = time.Since(t)
	t = time.Now()
	if n.model = tfl.NewModel(data); n.model == nil {
		return &Error{Op: "naive load", Path: n.path, Kind: ErrModelInvalid}
	}
	n.first.Model = time.Since(t)
	t = time.Now()
	n.opts = tfl.NewInterpreterOptions()
	if n.threads > 0 {
		n.opts.SetNumThread(n.threads)
	}
	if n.ip = tfl.NewInterpreter(n.model, n.opts); n.ip == nil {
		return &Error{Op: "naive load", Path: n.path, Kind: ErrInterpreter}
	}
	n.first.Interpreter = time.Since(t)
	t = time.Now()
	if n.ip.AllocateTensors() != tfl.OK {
		return &Error{Op: "naive load", Path: n.path, Kind: ErrAllocate}
	}
	n.first.Allocate = time.Since(t)
	return nil
}

// FirstStages are the timings of the first request's load and invoke.
func (n *Naive) FirstStages() NaiveStages {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.first
}

// Close frees the interpreter, options and model (with its C-heap copy).
func (n *Naive) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ip != nil {
		p, err := detachFn(n.ip, "i")
		if err != nil {
			// Options and the model's bytes are in use by the interpreter
			// that could not be freed: leak them rather than free under it.
			leaked(err)
			n.ip, n.opts, n.model = nil, nil, nil
			return
		}
		freeInterpreter(p)
		n.ip = nil
	}
	if n.opts != nil {
		if p, err := detachFn(n.opts, "o"); err == nil {
			freeOptions(p)
		} else {
			leaked(err)
		}
		n.opts = nil
	}
	if n.model != nil {
		freeHeapModel(n.model)
		n.model = nil
	}
}

// LoadIntoHeap is the naive load alone (read + NewModel), for the scaling
// comparison with LoadModel; free the result with FreeHeapModel.
func LoadIntoHeap(path string) (*HeapModel, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := tfl.NewModel(data)
	if m == nil {
		return nil, &Error{Op: "heap load", Path: path, Kind: ErrModelInvalid}
	}
	return &HeapModel{m: m}, nil
}

// HeapModel is a model copied into the C heap.
type HeapModel struct{ m *tfl.Model }

// Close frees it.
func (h *HeapModel) Close() {
	if h != nil && h.m != nil {
		freeHeapModel(h.m)
		h.m = nil
	}
}

// freeHeapModel frees a model made by NewModel and the C copy of its bytes.
func freeHeapModel(m *tfl.Model) {
	ptr, cleanup, err := bindingFields(m, "m")
	if err != nil {
		return
	}
	buf, _, err := bindingFields(m, "buf")
	if err != nil {
		return
	}
	cleanup.Stop()
	freeModel(*ptr)
	*ptr = nil
	if buf != nil && *buf != nil {
		freeC(*buf)
		*buf = nil
	}
}
