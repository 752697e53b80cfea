package errcode_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/edge-agent/edge-agent/errcode"
)

func TestCodeFindsWrappedKind(t *testing.T) {
	k := errcode.New("thing_broken", "the thing is broken")
	err := fmt.Errorf("doing it: %w", k)
	if got := errcode.Code(err); got != "thing_broken" {
		t.Errorf("Code(wrapped) = %q, want thing_broken", got)
	}
	if !errors.Is(err, k) {
		t.Error("errors.Is(wrapped, kind) = false")
	}
	if got := errcode.Code(errors.New("plain")); got != "internal" {
		t.Errorf("Code(plain) = %q, want internal", got)
	}
	if got := errcode.Code(nil); got != "" {
		t.Errorf("Code(nil) = %q, want empty", got)
	}
	if k.Error() != "the thing is broken" {
		t.Errorf("Error() = %q", k.Error())
	}
}

// Two kinds with the same code are still different kinds: matching is by
// identity, never by the code string.
func TestKindsMatchByIdentity(t *testing.T) {
	a, b := errcode.New("same", "a"), errcode.New("same", "b")
	if errors.Is(fmt.Errorf("x: %w", a), b) {
		t.Error("a kind matched another kind with the same code")
	}
}
