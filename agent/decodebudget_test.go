package agent_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/agent/infer/infertest"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// An image whose decode can never fit the decode budget is refused with
// input_too_large before it is decoded; one that fits is answered.
func TestInferRefusesWhatTheDecodeBudgetCannotHold(t *testing.T) {
	cfg := testConfig(t, agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")})
	cfg.Infer.DecodeBudget = 48 << 20
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	ctx := context.Background()
	bomb := infertest.FlatJPEG(3990, 3990, 1, 1, true)
	_, err := a.Command(ctx, mqtt.Command{Verb: "infer", Binary: true, Model: "v1", ID: "b", Payload: bomb})
	if !errors.Is(err, infer.ErrInputTooLarge) {
		t.Fatalf("bomb: %v, want input_too_large", err)
	}
	t.Log(err)
	cat := readShared(t, "cat.bmp")
	if _, err := a.Command(ctx, mqtt.Command{Verb: "infer", Binary: true, Model: "v1", ID: "c", Payload: cat}); err != nil {
		t.Fatal(err)
	}
	d := a.Status().Metrics.Memory.Decode
	if d.BudgetBytes != 48<<20 || d.TooLarge != 1 || d.Decodes != 2 || d.InUseBytes != 0 {
		t.Fatalf("decode stats %+v", d)
	}
}

// Under memory pressure the agent refuses new decodes (memory_pressure)
// and takes them again once the cgroup is back under pressure_low.
func TestMemoryPressureRefusesDecodesUntilItDrops(t *testing.T) {
	cfg := testConfig(t, agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")})
	cfg.Pool.MemoryCheck = 10 * time.Millisecond
	var pressure atomic.Bool
	a := start(t, cfg, agent.Options{Memory: func() power.Memory {
		m := power.Memory{RSSBytes: 60 << 20, CgroupCurrent: ptr[int64](100 << 20), CgroupMax: ptr[int64](1 << 30)}
		if pressure.Load() {
			m.CgroupCurrent = ptr[int64](1000 << 20)
		}
		return m
	}})
	defer a.Close()
	ctx := context.Background()
	cat := readShared(t, "cat.bmp")
	infer1 := func() error {
		_, err := a.Command(ctx, mqtt.Command{Verb: "infer", Binary: true, Model: "v1", ID: "c", Payload: cat})
		return err
	}
	if err := infer1(); err != nil {
		t.Fatal(err)
	}
	pressure.Store(true)
	waitFor(t, "decodes refused under pressure", func() bool { return errors.Is(infer1(), infer.ErrMemoryPressure) })
	if _, err := a.Command(ctx, mqtt.Command{Verb: "infer", Binary: true, Model: "v1", ID: "r", Payload: make([]byte, 128*128*3)}); err != nil {
		t.Fatalf("a raw tensor needs no decode: %v", err)
	}
	pressure.Store(false)
	waitFor(t, "decodes again after the pressure", func() bool { return infer1() == nil })
	if d := a.Status().Metrics.Memory.Decode; d.Shed == 0 || d.Shedding {
		t.Fatalf("decode stats %+v", d)
	}
}
