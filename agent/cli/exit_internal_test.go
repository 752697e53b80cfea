package cli

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"testing"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/errcode"
	"github.com/edge-agent/edge-agent/tflite"
)

// The documented exit statuses (README, usage text), written out here
// independently of exitByKind so a table entry lost or keyed wrongly fails.
var wantExit = []struct {
	kind *errcode.Kind
	code int
}{
	{ErrUsage, ExitUsage},
	{agent.ErrConfig, ExitConfig},
	{tflite.ErrModelNotFound, ExitModelFile},
	{tflite.ErrModelNotRegular, ExitModelFile},
	{tflite.ErrModelUnreadable, ExitModelFile},
	{tflite.ErrModelEmpty, ExitModelFile},
	{tflite.ErrModelNotTFLite, ExitModelFile},
	{tflite.ErrModelTruncated, ExitModelFile},
	{tflite.ErrModelInvalid, ExitModelFile},
	{tflite.ErrUnresolvedOp, ExitModelRuntime},
	{tflite.ErrNeedsDelegate, ExitModelRuntime},
	{tflite.ErrInterpreter, ExitModelRuntime},
	{tflite.ErrAllocate, ExitModelRuntime},
	{tflite.ErrInvoke, ExitModelRuntime},
	{tflite.ErrDelegate, ExitModelRuntime},
	{tflite.ErrInputSize, ExitInput},
	{infer.ErrUnsupportedInput, ExitInput},
	{infer.ErrImageDecode, ExitInput},
	{infer.ErrInputTooLarge, ExitInput},
	{infer.ErrNotImageModel, ExitInput},
	{infer.ErrInputRead, ExitInput},
}

func TestExitCodeByKind(t *testing.T) {
	for _, w := range wantExit {
		if got := exitCode(w.kind); got != w.code {
			t.Errorf("exitCode(%s) = %d, want %d", w.kind.Code(), got, w.code)
		}
		// Wrapped the way the packages return them: %w chains and a
		// tflite.Error carrying an OS error beside its kind.
		wrapped := fmt.Errorf("infer: %w", fmt.Errorf("load: %w", w.kind))
		if got := exitCode(wrapped); got != w.code {
			t.Errorf("exitCode(wrapped %s) = %d, want %d", w.kind.Code(), got, w.code)
		}
		beside := &tflite.Error{Op: "load model", Kind: w.kind}
		if got := exitCode(fmt.Errorf("x: %w", beside)); got != w.code {
			t.Errorf("exitCode(tflite.Error %s) = %d, want %d", w.kind.Code(), got, w.code)
		}
		// A running agent's reply carries only the code.
		if got := exitCode(knownKind(w.kind.Code(), "from the agent")); got != w.code {
			t.Errorf("exitCode(reply %s) = %d, want %d", w.kind.Code(), got, w.code)
		}
	}
	// Every documented status is reached by some kind.
	for _, code := range []int{ExitUsage, ExitModelFile, ExitModelRuntime, ExitInput, ExitConfig} {
		found := false
		for _, w := range wantExit {
			found = found || w.code == code
		}
		if !found {
			t.Errorf("exit status %d has no kind", code)
		}
	}
	if len(exitByKind) != len(wantExit) {
		t.Errorf("exitByKind has %d kinds, the documented list %d", len(exitByKind), len(wantExit))
	}
}

func TestExitCodeOthers(t *testing.T) {
	for name, c := range map[string]struct {
		err  error
		want int
	}{
		"nil":                 {nil, ExitOK},
		"help":                {fmt.Errorf("parse: %w", flag.ErrHelp), ExitOK},
		"unknown kind":        {errcode.New("something_new", "new"), ExitFailure},
		"wrapped unknown":     {fmt.Errorf("x: %w", errcode.New("model_empty_typo", "x")), ExitFailure},
		"no kind":             {errors.New("plain"), ExitFailure},
		"os error":            {fs.ErrNotExist, ExitFailure},
		"unknown reply":       {knownKind("no_previous_version", "no previous version"), ExitFailure},
		"same code new kind":  {errcode.New("model_empty", "not tflite's kind"), ExitFailure},
		"usage beside config": {errors.Join(errors.New("a"), fmt.Errorf("b: %w", ErrUsage)), ExitUsage},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("%s: exitCode = %d, want %d", name, got, c.want)
		}
	}
}
