package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// The first request is accepted before the other models are registered: a
// model whose file read blocks (configured first) delays neither Start nor
// a request for another model, which is registered ahead of it. Once the
// read goes on, the report lists both, in configured order.
func TestRequestServedWhileAnotherModelFileBlocks(t *testing.T) {
	cfg := testConfig(t,
		agent.ModelConfig{ID: "slow", Path: tflitetest.Path(t, "xor_model.tflite")},
		agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	reading := make(chan struct{})
	a := agent.New(cfg, quietLog(), agent.Options{BeforeModelRead: func(model, _ string) {
		if model == "slow" {
			close(reading)
			<-release // storage that does not answer
		}
	}})
	started := make(chan error, 1)
	go func() { started <- a.Start(context.Background()) }()
	released := false
	unblock := func() {
		if !released {
			released = true
			close(release)
		}
	}
	defer func() {
		unblock()
		a.Close()
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second): // a failure bound, not a measure
		unblock()
		<-started
		t.Fatal("Start waited for a model file whose read blocks")
	}
	<-reading // slow's registration has begun, and cannot end before release
	cat := readShared(t, "cat.bmp")
	if _, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", Binary: true, Model: "v1", ID: "c", Payload: cat}); err != nil {
		t.Fatalf("request for v1 while slow's file blocks: %v", err)
	}
	unblock()
	rep := a.Report() // waits for every model
	if len(rep.Models) != 2 || rep.Models[0].ID != "slow" || rep.Models[1].ID != "v1" {
		t.Fatalf("models in the report: %+v", rep.Models)
	}
	for _, m := range rep.Models {
		if m.Error != nil {
			t.Fatalf("%s: %+v", m.ID, m.Error)
		}
	}
}
