package agent_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/mqtt"
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
			cfg.Calibration = agent.CalibrationConfig{Runs: 1, SteadyInvokes: 1, MaxThreads: 2, IdleAfter: time.Millisecond}
			cfg.Models = []agent.ModelConfig{{ID: c.id, Path: tflitetest.Path(b, c.model), Pinned: true}}
			cfg.MQTT.Brokers, cfg.MQTT.Device = []string{broker.URL()}, "bench"
			a := agent.New(cfg, quietLog(), agent.Options{})
			if err := a.Start(b.Context()); err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			<-a.Settled()
			input := float32Input(0, 1)
			if c.image != "" {
				m, it, _, err := tflite.LoadStaged(tflitetest.Path(b, c.model), tflite.LoadOptions{})
				if err != nil {
					b.Fatal(err)
				}
				in, err := infer.FromFile(tflitetest.Path(b, c.image), it.Inputs()[0], infer.DefaultNormalization, 0)
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

func benchAgent(b *testing.B, fixtureName string, models []agent.ModelConfig) *agent.Agent {
	b.Helper()
	cfg := agent.DefaultConfig()
	cfg.StateDir = b.TempDir()
	cfg.MQTT.LocalListen = ""
	cfg.Calibration = agent.CalibrationConfig{Runs: 1, SteadyInvokes: 1, MaxThreads: 2, IdleAfter: time.Millisecond}
	cfg.Models = models
	cfg.Power.SysfsRoot = fixture(fixtureName)
	a := agent.New(cfg, quietLog(), agent.Options{System: idleSystem})
	if err := a.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	<-a.Settled()
	return a
}

func inferOnce(b *testing.B, a *agent.Agent, model string, input []byte) {
	b.Helper()
	payload, _ := json.Marshal(map[string]any{"model": model, "input": base64.StdEncoding.EncodeToString(input)})
	if _, err := a.Command(b.Context(), mqtt.Command{Verb: "infer", ID: "b", Payload: payload}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFirstResultAfterWake: the first request to mobilenet_v2 after a
// wake that prewarmed it, against the same request with the model cold
// (evicted), interleaved in one run. Metrics in ms.
func BenchmarkFirstResultAfterWake(b *testing.B) {
	models := []agent.ModelConfig{{ID: "v2", Path: tflitetest.Path(b, "mobilenet_v2_1.0_224_quant.tflite")}}
	a := benchAgent(b, "laptop-ac", models)
	input := make([]byte, 224*224*3)
	var warm, cold []time.Duration
	for b.Loop() {
		a.Pool().Evict("v2")
		if _, err := a.Wake(b.Context(), "bench"); err != nil {
			b.Fatal(err)
		}
		t := time.Now()
		inferOnce(b, a, "v2", input)
		warm = append(warm, time.Since(t))

		a.Pool().Evict("v2")
		t = time.Now()
		inferOnce(b, a, "v2", input)
		cold = append(cold, time.Since(t))
	}
	slices.Sort(warm)
	slices.Sort(cold)
	w, c := float64(warm[len(warm)/2])/1e6, float64(cold[len(cold)/2])/1e6
	b.ReportMetric(w, "prewarmed-ms")
	b.ReportMetric(c, "cold-ms")
	b.ReportMetric(c/w, "cold/prewarmed")
}

// BenchmarkWakeEnergy: CPU-seconds a wake spends prewarming four models
// under the AC policy against the low-battery policy (pinned only).
func BenchmarkWakeEnergy(b *testing.B) {
	models := []agent.ModelConfig{
		{ID: "xor", Path: tflitetest.Path(b, "xor_model.tflite"), Pinned: true},
		{ID: "v1", Path: tflitetest.Path(b, "mobilenet_v1_0.25_128_quant.tflite")},
		{ID: "v2", Path: tflitetest.Path(b, "mobilenet_v2_1.0_224_quant.tflite")},
		{ID: "lstm", Path: tflitetest.Path(b, "keras_lstm_mnist_ptq.tflite")},
	}
	ac := benchAgent(b, "laptop-ac", models)
	low := benchAgent(b, "laptop-low", models)
	var acCPU, lowCPU []float64
	for b.Loop() {
		for _, a := range []*agent.Agent{ac, low} {
			for _, m := range a.Pool().Models() {
				if !m.Pinned {
					a.Pool().Evict(m.ID)
				}
			}
			a.Pool().SetPinned("xor", false)
			a.Pool().Evict("xor")
			a.Pool().SetPinned("xor", true)
		}
		r, err := ac.Wake(b.Context(), "bench")
		if err != nil {
			b.Fatal(err)
		}
		acCPU = append(acCPU, r.Energy.CPUSeconds)
		r, err = low.Wake(b.Context(), "bench")
		if err != nil {
			b.Fatal(err)
		}
		lowCPU = append(lowCPU, r.Energy.CPUSeconds)
	}
	slices.Sort(acCPU)
	slices.Sort(lowCPU)
	a, l := acCPU[len(acCPU)/2], lowCPU[len(lowCPU)/2]
	b.ReportMetric(a, "ac-cpu-s")
	b.ReportMetric(l, "low-battery-cpu-s")
	b.ReportMetric(a/max(l, 1e-6), "ac/low")
}
