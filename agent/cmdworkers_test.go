package agent_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// Requests over MQTT that wait on one slow model (its file's read blocks
// here: slow storage) do not hold back a request for another model. The
// pool's load slot already puts small loads first; the command workers in
// front of it must not all be taken by requests waiting there (with the
// old default of two, three such requests kept v1's forever).
func TestRequestNotQueuedBehindSlowLoadsOverMQTT(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	slow := tflitetest.Path(t, "xor_model.tflite")
	cfg := mqttConfig(t, b.URL(), agent.ModelConfig{ID: "slow", Path: slow},
		agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")})
	release := make(chan struct{})
	a := startNoWait(t, cfg, agent.Options{BeforeModelRead: func(path string) {
		if path == slow {
			<-release
		}
	}})
	defer a.Close()
	defer close(release) // before Close: slow's registration ends

	o := mqtt.Options{Brokers: []string{b.URL()}, Device: cfg.MQTT.Device}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	slowDone := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := mqtt.Call(ctx, o, "infer", "", []byte(`{"model":"slow","input":"AAAAAAAAAAA=","raw":true}`), false)
			slowDone <- err
		}()
	}
	// An ordering aid, not a measure: the slow requests reach the agent
	// first.
	time.Sleep(500 * time.Millisecond)

	cat := readShared(t, "cat.bmp")
	vctx, vcancel := context.WithTimeout(ctx, 20*time.Second) // a failure bound
	defer vcancel()
	r, err := mqtt.Call(vctx, o, "infer", "v1", cat, true)
	if err != nil {
		t.Fatalf("v1's request behind three requests waiting on slow: %v", err)
	}
	var rep agent.InferReply
	if !r.OK || json.Unmarshal(r.Result, &rep) != nil || len(rep.Top) == 0 || rep.Top[0].Index != 286 {
		t.Fatalf("v1's answer: %+v", r)
	}
	select {
	case err := <-slowDone:
		t.Fatalf("a request for slow ended while its file blocks: %v", err)
	default:
	}
}
