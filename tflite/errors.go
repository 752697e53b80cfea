package tflite

import (
	"fmt"

	"github.com/edge-agent/edge-agent/errcode"
)

// Kind is errcode.Kind, kept as an alias so this package's callers can keep
// writing tflite.Kind; new kinds elsewhere are made with errcode.New.
type Kind = errcode.Kind

// The kinds of failure this package reports. Match them with errors.Is.
var (
	// ErrModelNotFound: the model path does not exist.
	ErrModelNotFound = errcode.New("model_not_found", "model file not found")
	// ErrModelNotRegular: the path is a directory or another non-file.
	ErrModelNotRegular = errcode.New("model_not_regular", "model path is not a regular file")
	// ErrModelUnreadable: the file exists but cannot be opened or read.
	ErrModelUnreadable = errcode.New("model_unreadable", "model file is not readable")
	// ErrModelEmpty: the file has zero bytes.
	ErrModelEmpty = errcode.New("model_empty", "model file is empty")
	// ErrModelNotTFLite: the file lacks the TFLite flatbuffer identifier
	// ("TFL3" at offset 4), e.g. random bytes or another format.
	ErrModelNotTFLite = errcode.New("model_not_tflite", "not a TensorFlow Lite model (no TFL3 identifier)")
	// ErrModelTruncated: the flatbuffer refers past the end of the file.
	ErrModelTruncated = errcode.New("model_truncated", "model file is truncated")
	// ErrModelInvalid: the runtime's verifier refused the flatbuffer (a
	// corrupted header or table).
	ErrModelInvalid = errcode.New("model_invalid", "model flatbuffer is invalid")
	// ErrUnresolvedOp: the model uses a custom operator no registered kernel
	// or delegate provides.
	ErrUnresolvedOp = errcode.New("model_unresolved_op", "model uses an operator the runtime does not have")
	// ErrNeedsDelegate: the model was compiled for an accelerator (an Edge
	// TPU custom op) and no delegate for it is loaded; use its CPU twin.
	ErrNeedsDelegate = errcode.New("model_needs_delegate", "model needs an accelerator delegate that is not loaded")
	// ErrInterpreter: the runtime could not create an interpreter.
	ErrInterpreter = errcode.New("interpreter_create", "cannot create interpreter")
	// ErrAllocate: tensor allocation failed for another reason.
	ErrAllocate = errcode.New("allocate_tensors", "cannot allocate tensors")
	// ErrInvoke: the runtime returned an error status from Invoke.
	ErrInvoke = errcode.New("invoke", "invoke failed")
	// ErrDelegate: a delegate could not be created from its library.
	ErrDelegate = errcode.New("delegate_create", "cannot create delegate")
	// ErrInputSize: input bytes do not match the tensor's byte size.
	ErrInputSize = errcode.New("input_size", "input size does not match the model's input tensor")
	// ErrTensorIndex: no tensor at that index.
	ErrTensorIndex = errcode.New("tensor_index", "no tensor at that index")
	// ErrTensorType: the tensor's type is not supported for the operation.
	ErrTensorType = errcode.New("tensor_type", "unsupported tensor type")
	// ErrUnknownModel: the pool has no model with that id.
	ErrUnknownModel = errcode.New("unknown_model", "unknown model id")
	// ErrOverBudget: the model does not fit the memory budget even after
	// evicting everything evictable.
	ErrOverBudget = errcode.New("over_budget", "model does not fit the memory budget")
	// ErrBusy: the model has leased interpreters, so it cannot be evicted now.
	ErrBusy = errcode.New("model_busy", "model is in use")
	// ErrPinned: pinned models are never evicted.
	ErrPinned = errcode.New("model_pinned", "model is pinned")
	// ErrPoolClosed: the pool was closed.
	ErrPoolClosed = errcode.New("pool_closed", "pool is closed")
	// ErrBinding: go-tflite's internals are not what this package expects.
	ErrBinding = errcode.New("binding", "go-tflite binding mismatch")
)

// Error is a failed operation on a model: what was done, on which file, the
// kind of failure and the runtime's own words where it gave any.
type Error struct {
	Op      string // e.g. "load model", "allocate tensors"
	Path    string // the model file, when known
	Kind    *Kind
	Detail  string // the runtime's message, or this package's explanation
	wrapped error  // an underlying OS error, if any
}

func (e *Error) Error() string {
	s := e.Op
	if e.Path != "" {
		s += fmt.Sprintf(" %q", e.Path)
	}
	s += ": " + e.Kind.Error()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap lets errors.Is match both the kind and an underlying OS error.
func (e *Error) Unwrap() []error {
	if e.wrapped != nil {
		return []error{e.Kind, e.wrapped}
	}
	return []error{e.Kind}
}

// Code returns the stable code of err's kind, "" when err is nil and
// "internal" when it carries no kind (errcode.Code, kept for callers).
func Code(err error) string { return errcode.Code(err) }
