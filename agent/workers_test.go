package agent_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// At a start, requests for three large models arrive over MQTT just before
// one for a 400-byte model: with the default workers the small one is not
// queued behind them (with two workers it waited for two loads and a
// 200 ms invoke). The pool orders what it sees, so it must see them all.
func TestSmallRequestNotQueuedBehindLargeOnesAtAStart(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	sub := b.Subscribe(t, "operator", "edge/dev1/reply/#")
	large := map[string]string{
		"deeplab": "deeplabv3_mnv2_pascal_quant.tflite",
		"v2":      "mobilenet_v2_1.0_224_quant.tflite",
		"bird":    "mobilenet_v2_1.0_224_inat_bird_quant.tflite",
	}
	var models []agent.ModelConfig
	for id, file := range large {
		models = append(models, agent.ModelConfig{ID: id, Path: tflitetest.Path(t, file)})
	}
	models = append(models, agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	cfg := mqttConfig(t, b.URL(), models...)
	cfg.Calibration.IdleAfter = time.Hour // not measured meanwhile: the test is the requests
	a := startNoWait(t, cfg, agent.Options{})
	defer a.Close()
	for _, m := range models[:len(large)] { // in order, then xor
		info, err := tflite.Inspect(m.Path, nil)
		if err != nil {
			t.Fatal(err)
		}
		sub.PublishAsync("edge/dev1/cmd/infer/r-"+m.ID+"/"+m.ID, make([]byte, info.Inputs[0].Bytes))
	}
	sub.PublishAsync("edge/dev1/cmd/infer/r-xor/xor", float32Input(0, 1))
	var order []string
	deadline := time.After(2 * time.Minute) // a failure bound, not a measure
	for len(order) < len(models) {
		select {
		case m := <-sub.Chan():
			var r mqtt.Reply
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				t.Fatalf("reply %s: %v", m.Payload, err)
			}
			if !r.OK {
				t.Fatalf("reply %s", m.Payload)
			}
			order = append(order, r.ID)
		case <-deadline:
			t.Fatalf("replies so far: %v", order)
		}
	}
	if order[0] != "r-xor" {
		t.Fatalf("replies in order %v: the small model's came after a large one's", order)
	}
}
