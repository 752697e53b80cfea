package infer_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/agent/infer/infertest"
)

// A decode whose estimate exceeds the whole budget is refused at once,
// before a byte of pixel data is decoded, with both figures in the reason.
func TestDecodeBudgetRefusesWhatCanNeverFit(t *testing.T) {
	bomb := infertest.FlatJPEG(3990, 3990, 1, 1, true) // 187 KB, 3990² progressive 4:4:4
	b := infer.NewDecodeBudget(64 << 20)
	var err error
	got := allocated(func() { _, err = b.Decode(context.Background(), bomb, 0) })
	if !errors.Is(err, infer.ErrInputTooLarge) {
		t.Fatalf("err = %v, want input_too_large", err)
	}
	t.Logf("%v (allocated %d bytes)", err, got)
	if got > 1<<20 {
		t.Errorf("refusing it allocated %d bytes: it was decoded", got)
	}
	for _, want := range []string{"progressive 4:4:4", "decode budget of 64.0 MiB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("reason %q does not say %q", err, want)
		}
	}
	if s := b.Stats(); s.TooLarge != 1 || s.InUseBytes != 0 || s.PeakBytes != 0 {
		t.Errorf("stats %+v", s)
	}
}

// Concurrent decodes that fit one at a time wait their turn and all
// complete; the budget is never exceeded and is all given back.
func TestDecodeBudgetConcurrentDecodesWait(t *testing.T) {
	img := infertest.FlatJPEG(1500, 1500, 1, 1, true)
	est, err := infer.EstimateCost(img)
	if err != nil {
		t.Fatal(err)
	}
	b := infer.NewDecodeBudget(est.Peak() + est.Peak()/2) // one at a time
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, err := b.Decode(ctx, img, 0)
			if err != nil {
				errs <- err
				return
			}
			time.Sleep(5 * time.Millisecond) // resized, invoked
			d.Release()
			d.Release() // idempotent
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := b.Stats()
	t.Logf("%+v", s)
	if s.PeakBytes > s.BudgetBytes || s.InUseBytes != 0 || s.Waited == 0 || s.Decodes != 8 {
		t.Errorf("stats %+v: want peak ≤ budget, nothing held after, some waited", s)
	}
}

// A decode waiting for room returns promptly when its context ends, and
// leaves no reservation behind.
func TestDecodeBudgetWaitEndsWithContext(t *testing.T) {
	img := infertest.FlatJPEG(1000, 1000, 1, 1, false)
	est, _ := infer.EstimateCost(img)
	b := infer.NewDecodeBudget(est.Peak())
	held, err := b.Decode(context.Background(), img, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	t0 := time.Now()
	_, err = b.Decode(ctx, img, 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want canceled", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("returned %v after the cancel", d)
	}
	held.Release()
	if s := b.Stats(); s.InUseBytes != 0 || s.Waiting != 0 {
		t.Errorf("stats %+v after release", s)
	}
	d, err := b.Decode(context.Background(), img, 0)
	if err != nil {
		t.Fatal(err)
	}
	d.Release()
}

// Under memory pressure new decodes are refused with memory_pressure;
// after it, they are admitted again.
func TestDecodeBudgetSheds(t *testing.T) {
	img := infertest.FlatJPEG(100, 100, 1, 1, false)
	b := infer.NewDecodeBudget(64 << 20)
	b.SetShedding(true)
	if _, err := b.Decode(context.Background(), img, 0); !errors.Is(err, infer.ErrMemoryPressure) {
		t.Fatalf("err = %v, want memory_pressure", err)
	}
	b.SetShedding(false)
	d, err := b.Decode(context.Background(), img, 0)
	if err != nil {
		t.Fatal(err)
	}
	d.Release()
	if s := b.Stats(); s.Shed != 1 || s.InUseBytes != 0 {
		t.Errorf("stats %+v", s)
	}
}
