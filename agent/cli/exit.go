package cli

import (
	"errors"
	"flag"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/errcode"
	"github.com/edge-agent/edge-agent/tflite"
)

// Exit statuses of the edge-agent command; documented in the README.
const (
	ExitOK           = 0
	ExitFailure      = 1 // anything not below
	ExitUsage        = 2 // unknown command, bad flags or arguments
	ExitModelFile    = 3 // the model file is missing, unreadable or not a valid model
	ExitModelRuntime = 4 // the runtime cannot run the model here (ops, delegates, allocation, invoke)
	ExitInput        = 5 // the input (image or raw tensor) is unusable for the model
	ExitConfig       = 6 // the configuration file is invalid
)

// ErrUsage marks command-line mistakes.
var ErrUsage = errcode.New("usage", "usage")

// exitByKind is the exit status of each documented kind. It is keyed by the
// kinds themselves, so a kind renamed or mistyped fails to compile instead
// of silently falling to ExitFailure.
var exitByKind = map[*errcode.Kind]int{
	ErrUsage:                  ExitUsage,
	agent.ErrConfig:           ExitConfig,
	tflite.ErrModelNotFound:   ExitModelFile,
	tflite.ErrModelNotRegular: ExitModelFile,
	tflite.ErrModelUnreadable: ExitModelFile,
	tflite.ErrModelEmpty:      ExitModelFile,
	tflite.ErrModelNotTFLite:  ExitModelFile,
	tflite.ErrModelTruncated:  ExitModelFile,
	tflite.ErrModelInvalid:    ExitModelFile,
	tflite.ErrUnresolvedOp:    ExitModelRuntime,
	tflite.ErrNeedsDelegate:   ExitModelRuntime,
	tflite.ErrInterpreter:     ExitModelRuntime,
	tflite.ErrAllocate:        ExitModelRuntime,
	tflite.ErrInvoke:          ExitModelRuntime,
	tflite.ErrDelegate:        ExitModelRuntime,
	tflite.ErrInputSize:       ExitInput,
	infer.ErrUnsupportedInput: ExitInput,
	infer.ErrImageDecode:      ExitInput,
	infer.ErrInputTooLarge:    ExitInput,
	infer.ErrNotImageModel:    ExitInput,
	infer.ErrInputRead:        ExitInput,
}

// exitCode maps an error to the command's exit status.
func exitCode(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	var k *errcode.Kind
	if !errors.As(err, &k) {
		return ExitFailure
	}
	if code, ok := exitByKind[k]; ok {
		return code // the first kind in err's tree
	}
	// A kind without a status may wrap, or sit beside, one that has one.
	for kind, code := range exitByKind {
		if errors.Is(err, kind) {
			return code
		}
	}
	return ExitFailure
}

// knownKind is the documented kind with that code, so a reply from a
// running agent (which carries only the code) exits as the same error
// would here; an unknown code is a new kind of its own.
func knownKind(code, msg string) error {
	for kind := range exitByKind {
		if kind.Code() == code {
			return &remoteError{kind: kind, msg: msg}
		}
	}
	return errcode.New(code, msg)
}

// remoteError is an agent's error reply: its message, matching its kind.
type remoteError struct {
	kind *errcode.Kind
	msg  string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }
