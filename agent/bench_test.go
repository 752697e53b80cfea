package agent_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// BenchmarkInferOverMQTT is an infer command's round trip over a loopback
// mosquitto (publish → agent → reply received) for a warm model, beside the
// invoke time inside it. Reported: p50/p99 of the round trip and the median
// invoke, in ms.
func BenchmarkInferOverMQTT(b *testing.B) {
	for _, c := range []struct{ id, model, image string }{
		{"xor", "xor_model.tflite", ""},
		{"v1", "mobilenet_v1_0.25_128_quant.tflite", "cat.bmp"},
		{"v2", "mobilenet_v2_1.0_224_quant.tflite", "cat.bmp"},
	} {
		b.Run(c.id, func(b *testing.B) {
			broker := mqtttest.Start(b, mqtttest.Options{})
			cfg := agent.DefaultConfig()
			cfg.StateDir = b.TempDir()
			cfg.Calibration = agent.CalibrationConfig{Runs: 1, SteadyInvokes: 1, MaxThreads: 2}
			cfg.Models = []agent.ModelConfig{{ID: c.id, Path: tflitetest.Path(b, c.model), Pinned: true}}
			cfg.MQTT.Brokers, cfg.MQTT.Device = []string{broker.URL()}, "bench"
			a := agent.New(cfg, quietLog(), agent.Options{})
			if err := a.Start(b.Context()); err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			input := float32Input(0, 1)
			if c.image != "" {
				m, it, _, err := tflite.LoadStaged(tflitetest.Path(b, c.model), tflite.LoadOptions{})
				if err != nil {
					b.Fatal(err)
				}
				in, err := infer.FromFile(tflitetest.Path(b, c.image), it.Inputs()[0], infer.DefaultNormalization)
				it.Close()
				m.Close()
				if err != nil {
					b.Fatal(err)
				}
				input = in.Bytes
			}
			sub := broker.Subscribe(b, "bench-op", "edge/bench/reply/#")
			var rtts, invokes []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("b%d", i)
				t := time.Now()
				sub.PublishAsync("edge/bench/cmd/infer/"+id+"/"+c.id, input)
				msg := sub.Next(b, 10*time.Second)
				rtts = append(rtts, time.Since(t))
				var r struct {
					OK     bool
					Result struct {
						InvokeMs float64 `json:"invoke_ms"`
						Warm     bool
					}
				}
				if err := json.Unmarshal(msg.Payload, &r); err != nil || !r.OK || !r.Result.Warm {
					b.Fatalf("reply %s", msg.Payload)
				}
				invokes = append(invokes, time.Duration(r.Result.InvokeMs*1e6))
			}
			b.StopTimer()
			slices.Sort(rtts)
			slices.Sort(invokes)
			q := func(d []time.Duration, p float64) float64 { return float64(d[int(p*float64(len(d)-1))]) / 1e6 }
			b.ReportMetric(q(rtts, 0.5), "rtt-p50-ms")
			b.ReportMetric(q(rtts, 0.99), "rtt-p99-ms")
			b.ReportMetric(q(invokes, 0.5), "invoke-p50-ms")
		})
	}
}
