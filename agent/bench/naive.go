package bench

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	tfl "github.com/tphakala/go-tflite"

	"github.com/edge-agent/edge-agent/tflite"
)

// naive is the loop a user writes by hand around go-tflite, the benchmark's
// baseline: read the file into memory, NewModel (which copies it into the C
// heap), one interpreter behind a mutex, loaded at the first request. It
// frees explicitly on close, as the agent does, so the two differ only in
// how they load and serve.
type naive struct {
	path    string
	threads int

	// mu guards everything below: one request at a time.
	mu    sync.Mutex
	model *tfl.Model
	opts  *tfl.InterpreterOptions
	ip    *tfl.Interpreter
	first naiveStages
}

// naiveStages time the naive first request.
type naiveStages struct {
	Read, Model, Interpreter, Allocate, FirstInvoke time.Duration
}

var errNaive = errors.New("naive baseline")

// newNaive prepares a baseline for the model at path; nothing is loaded.
func newNaive(path string, threads int) *naive { return &naive{path: path, threads: threads} }

// Infer runs one request, loading the model first if this is the first.
func (n *naive) Infer(input []byte, out []byte) ([]byte, error) {
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
		return out, fmt.Errorf("%w: %s: input is %d bytes, the model takes %d", errNaive, n.path, len(input), in.ByteSize())
	}
	in.CopyFromBuffer(input)
	t := time.Now()
	if n.ip.Invoke() != tfl.OK {
		return out, fmt.Errorf("%w: %s: invoke failed", errNaive, n.path)
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

func (n *naive) load() error {
	t := time.Now()
	data, err := os.ReadFile(n.path)
	if err != nil {
		return fmt.Errorf("naive load: %w", err)
	}
	n.first.Read = time.Since(t)
	t = time.Now()
	if n.model = tfl.NewModel(data); n.model == nil {
		return fmt.Errorf("%w: %s: the runtime refused the model", errNaive, n.path)
	}
	n.first.Model = time.Since(t)
	t = time.Now()
	n.opts = tfl.NewInterpreterOptions()
	if n.threads > 0 {
		n.opts.SetNumThread(n.threads)
	}
	if n.ip = tfl.NewInterpreter(n.model, n.opts); n.ip == nil {
		return fmt.Errorf("%w: %s: cannot create an interpreter", errNaive, n.path)
	}
	n.first.Interpreter = time.Since(t)
	t = time.Now()
	if n.ip.AllocateTensors() != tfl.OK {
		return fmt.Errorf("%w: %s: cannot allocate tensors", errNaive, n.path)
	}
	n.first.Allocate = time.Since(t)
	return nil
}

// FirstStages are the timings of the first request's load and invoke.
func (n *naive) FirstStages() naiveStages {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.first
}

// Close frees the interpreter, options and model (with its C-heap copy).
func (n *naive) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	var objs []any
	if n.ip != nil {
		objs = append(objs, n.ip)
	}
	if n.opts != nil {
		objs = append(objs, n.opts)
	}
	if n.model != nil {
		objs = append(objs, n.model)
	}
	// A failed free leaves the objects allocated and counted in
	// tflite.Leaked; the bench's memory figures would show it.
	_ = tflite.Free(objs...)
	n.ip, n.opts, n.model = nil, nil, nil
}

// loadIntoHeap is the naive load alone (read + NewModel), for the scaling
// comparison with tflite.LoadModel; free the result with tflite.Free.
func loadIntoHeap(path string) (*tfl.Model, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := tfl.NewModel(data)
	if m == nil {
		return nil, fmt.Errorf("%w: %s: the runtime refused the model", errNaive, path)
	}
	return m, nil
}
