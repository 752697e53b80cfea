package update

import (
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/agent/observe"
	"github.com/edge-agent/edge-agent/tflite"
)

var _ observe.Observer = (*Manager)(nil)

// The manager, as a request observer, counts every request the model ran
// (answered or failed in its run) for the guard, and keeps in the parity
// ring, by reference, those the model answered; a failed load is neither.
func TestRequestDoneFeedsGuardAndRing(t *testing.T) {
	m := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), ParityRing: 8, ParityRingBytes: 1 << 20,
		Settings: func() Settings { return Settings{RollbackWindow: 4} }})
	res := infer.Result{Output: tflite.TensorInfo{Type: "uint8", Shape: []int{1, 3}}, Raw: []byte{1, 9, 2}}
	img := []byte("jpeg")
	m.RequestDone(observe.RequestDone{Model: "m", Version: "v1", Image: img, Result: res})
	m.RequestDone(observe.RequestDone{Model: "m", Version: "v1", Err: errors.New("invoke"), Stage: observe.StageRun})
	m.RequestDone(observe.RequestDone{Model: "m", Version: "v1", Err: errors.New("load"), Stage: observe.StageLoad})

	if o := m.outcomes[outcomeKey("m", "v1")]; o == nil || len(o.failed) != 2 || o.failed[0] || !o.failed[1] {
		t.Fatalf("outcomes %+v, want [ok, failed] (the load failure not counted)", o)
	}
	s := m.parity.snapshot("m")
	if len(s) != 1 || &s[0].image[0] != &img[0] {
		t.Fatalf("ring %+v, want the answered request's image, by reference", s)
	}
	if s[0].answer == nil || s[0].answer.version != "v1" || s[0].answer.top1 != 1 {
		t.Fatalf("answer %+v, want v1's top-1 class 1", s[0].answer)
	}
}
