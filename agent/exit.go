package agent

import (
	"errors"
	"flag"

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

// ErrConfig marks an invalid configuration.
var ErrConfig = errcode.New("config_invalid", "invalid configuration")

var exitByCode = map[string]int{
	"usage":                 ExitUsage,
	"config_invalid":        ExitConfig,
	"model_not_found":       ExitModelFile,
	"model_not_regular":     ExitModelFile,
	"model_unreadable":      ExitModelFile,
	"model_empty":           ExitModelFile,
	"model_not_tflite":      ExitModelFile,
	"model_truncated":       ExitModelFile,
	"model_invalid":         ExitModelFile,
	"model_unresolved_op":   ExitModelRuntime,
	"model_needs_delegate":  ExitModelRuntime,
	"interpreter_create":    ExitModelRuntime,
	"allocate_tensors":      ExitModelRuntime,
	"invoke":                ExitModelRuntime,
	"delegate_create":       ExitModelRuntime,
	"input_size":            ExitInput,
	"input_unsupported":     ExitInput,
	"input_image_decode":    ExitInput,
	"input_too_large":       ExitInput,
	"input_not_image_model": ExitInput,
	"input_unreadable":      ExitInput,
}

// exitCode maps an error to the command's exit status.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if c, ok := exitByCode[tflite.Code(err)]; ok {
		return c
	}
	return ExitFailure
}
