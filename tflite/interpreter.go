package tflite

import (
	"fmt"
	"unsafe"

	tfl "github.com/tphakala/go-tflite"
)

// Options configure an interpreter. The zero value means the runtime's
// defaults on the CPU.
type Options struct {
	// Threads for the CPU kernels; 0 leaves the runtime's default.
	Threads int
	// Delegates are tried in order; each must load or creation fails.
	Delegates []DelegateSpec
}

// DelegateSpec names an external delegate library (TfLiteExternalDelegate),
// such as the Edge TPU's libedgetpu.so.1.
type DelegateSpec struct {
	Name    string            // for reports, e.g. "edgetpu"
	Library string            // path or soname of the delegate library
	Options map[string]string // passed to the library, e.g. {"device": "usb"}
}

// Interpreter runs one model. It is not safe for concurrent use: the pool
// hands each one to a single lease holder at a time.
type Interpreter struct {
	model *Model
	ip    *tfl.Interpreter
	opts  *tfl.InterpreterOptions
	dels  []unsafe.Pointer // external delegates, freed after the interpreter
	log   errLog

	inputs, outputs []TensorInfo
	delegates       []string
}

// NewInterpreter creates an interpreter on m with o. It does not allocate
// tensors; see AllocateTensors.
func NewInterpreter(m *Model, o Options) (*Interpreter, error) {
	if m == nil || m.m == nil {
		return nil, &Error{Op: "create interpreter", Kind: ErrInterpreter, Detail: "model is closed"}
	}
	it := &Interpreter{model: m, log: newErrLog()}
	ok := false
	defer func() {
		if !ok {
			it.free()
		}
	}()
	it.opts = tfl.NewInterpreterOptions()
	if it.opts == nil {
		return nil, &Error{Op: "create interpreter", Path: m.Path, Kind: ErrInterpreter, Detail: "TfLiteInterpreterOptionsCreate returned NULL"}
	}
	copts, err := cPointer(it.opts, "o")
	if err != nil {
		return nil, err
	}
	setReporter(copts, it.log)
	if o.Threads > 0 {
		it.opts.SetNumThread(o.Threads)
	}
	for _, d := range o.Delegates {
		del, err := newExternalDelegate(d.Library, d.Options)
		if err != nil {
			return nil, &Error{Op: "create delegate " + d.Name, Path: m.Path, Kind: ErrDelegate,
				Detail: fmt.Sprintf("library %q: %v", d.Library, err), wrapped: err}
		}
		it.dels = append(it.dels, del)
		addDelegate(copts, del)
		it.delegates = append(it.delegates, d.Name)
	}
	it.ip = tfl.NewInterpreter(m.m, it.opts)
	if it.ip == nil {
		return nil, &Error{Op: "create interpreter", Path: m.Path, Kind: ErrInterpreter, Detail: it.log.take()}
	}
	m.live.Add(1)
	ok = true
	return it, nil
}

// Model returns the model the interpreter runs.
func (it *Interpreter) Model() *Model { return it.model }

// Delegates names the delegates applied, in order; empty means CPU only.
func (it *Interpreter) Delegates() []string { return it.delegates }

// AllocateTensors plans and allocates the tensor arena. A model whose custom
// ops no kernel provides fails here.
func (it *Interpreter) AllocateTensors() error {
	if it.ip.AllocateTensors() == tfl.OK {
		it.inputs, it.outputs = nil, nil // shapes are final only now
		return nil
	}
	e := &Error{Op: "allocate tensors", Path: it.model.Path, Kind: ErrAllocate, Detail: it.log.take()}
	if len(it.dels) == 0 {
		if ops, err := it.model.CustomOps(); err == nil && len(ops) > 0 {
			e.Kind = ErrUnresolvedOp
			if it.model.NeedsEdgeTPU() {
				e.Kind = ErrNeedsDelegate
			}
		}
	}
	return e
}

// Invoke runs the model once on the current inputs.
func (it *Interpreter) Invoke() error {
	if it.ip.Invoke() != tfl.OK {
		return &Error{Op: "invoke", Path: it.model.Path, Kind: ErrInvoke, Detail: it.log.take()}
	}
	return nil
}

// Inputs describes the input tensors.
func (it *Interpreter) Inputs() []TensorInfo {
	if it.inputs == nil {
		it.inputs = describe(it.ip.GetInputTensorCount(), it.ip.GetInputTensor)
	}
	return it.inputs
}

// Outputs describes the output tensors.
func (it *Interpreter) Outputs() []TensorInfo {
	if it.outputs == nil {
		it.outputs = describe(it.ip.GetOutputTensorCount(), it.ip.GetOutputTensor)
	}
	return it.outputs
}

func describe(n int, tensor func(int) *tfl.Tensor) []TensorInfo {
	out := make([]TensorInfo, 0, n)
	for i := range n {
		out = append(out, tensorInfo(tensor(i)))
	}
	return out
}

// SetInput copies b into input tensor i; b must be exactly its byte size.
func (it *Interpreter) SetInput(i int, b []byte) error {
	t := it.inputTensor(i)
	if t == nil {
		return &Error{Op: "set input", Path: it.model.Path, Kind: ErrTensorIndex, Detail: fmt.Sprintf("input %d of %d", i, it.ip.GetInputTensorCount())}
	}
	if want := int(t.ByteSize()); len(b) != want {
		return &Error{Op: "set input", Path: it.model.Path, Kind: ErrInputSize,
			Detail: fmt.Sprintf("got %d bytes, input %d (%s %v) takes %d", len(b), i, typeName(t.Type()), t.Shape(), want)}
	}
	if len(b) == 0 {
		return nil
	}
	if t.CopyFromBuffer(b) != tfl.OK {
		return &Error{Op: "set input", Path: it.model.Path, Kind: ErrInputSize, Detail: it.log.take()}
	}
	return nil
}

// ZeroInputs sets every input tensor to zero bytes, the default warm-up input.
func (it *Interpreter) ZeroInputs() {
	for i := range it.ip.GetInputTensorCount() {
		t := it.ip.GetInputTensor(i)
		if p := t.Data(); p != nil {
			clear(unsafe.Slice((*byte)(p), t.ByteSize()))
		}
	}
}

// CopyOutput copies output tensor i into dst, growing it when too small, and
// returns the filled slice.
func (it *Interpreter) CopyOutput(i int, dst []byte) ([]byte, error) {
	var t *tfl.Tensor
	if i >= 0 && i < it.ip.GetOutputTensorCount() {
		t = it.ip.GetOutputTensor(i)
	}
	if t == nil {
		return dst, &Error{Op: "read output", Path: it.model.Path, Kind: ErrTensorIndex, Detail: fmt.Sprintf("output %d of %d", i, it.ip.GetOutputTensorCount())}
	}
	n := int(t.ByteSize())
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	if n > 0 && t.CopyToBuffer(dst) != tfl.OK {
		return dst, &Error{Op: "read output", Path: it.model.Path, Kind: ErrTensorIndex, Detail: it.log.take()}
	}
	return dst, nil
}

func (it *Interpreter) inputTensor(i int) *tfl.Tensor {
	if i < 0 || i >= it.ip.GetInputTensorCount() {
		return nil
	}
	return it.ip.GetInputTensor(i)
}

// Close frees the interpreter, then its delegates and options. Safe to call
// more than once.
func (it *Interpreter) Close() {
	if it == nil {
		return
	}
	if it.ip != nil {
		it.model.live.Add(-1)
	}
	it.free()
}

// free releases whatever was created, in dependency order: the interpreter
// uses the delegates, which are registered on the options.
//
// If the interpreter cannot be detached from go-tflite (its layout changed),
// nothing it references is freed: the delegates, options and error log stay
// allocated on purpose, since freeing them under a live interpreter is a
// use-after-free. The leak is logged once.
func (it *Interpreter) free() {
	if it.ip != nil {
		p, err := detachFn(it.ip, "i")
		if err != nil {
			leaked(err)
			it.ip, it.dels, it.opts, it.log = nil, nil, nil, errLog{}
			return
		}
		freeInterpreter(p)
		it.ip = nil
	}
	for _, d := range it.dels {
		freeExternalDelegate(d)
	}
	it.dels = nil
	if it.opts != nil {
		p, err := detachFn(it.opts, "o")
		if err != nil {
			// The options own the error reporter's buffer: keep both.
			leaked(err)
			it.opts, it.log = nil, errLog{}
			return
		}
		freeOptions(p)
		it.opts = nil
	}
	it.log.free()
	it.log = errLog{}
}

// ResetVariables sets the interpreter's variable tensors (the state an LSTM
// carries from one invoke to the next) back to their initial values.
func (it *Interpreter) ResetVariables() error {
	if st := it.ip.ResetVariableTensors(); st != tfl.OK {
		return &Error{Op: "reset variable tensors", Path: it.model.Path, Kind: ErrInvoke, Detail: it.log.take()}
	}
	return nil
}
