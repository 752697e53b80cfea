package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// /metrics parses with Prometheus's own text parser and passes promtool's
// lint (Debian's prometheus package; missing, the test fails); its request histograms
// carry the model label and count exactly the requests sent; the MQTT
// metrics and status report the same requests with percentiles.
func TestPrometheusAndLatencyMetrics(t *testing.T) {
	addr := mqtttest.FreeAddr(t)
	cfg := testConfig(t, agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")},
		agent.ModelConfig{ID: "lstm", Path: tflitetest.Path(t, "keras_lstm_mnist_ptq.tflite")})
	cfg.Metrics.Listen = addr
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	ask := func(model string, payload map[string]any) {
		t.Helper()
		payload["model"] = model
		b, _ := json.Marshal(payload)
		if _, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", ID: "p", Payload: b}); err != nil {
			t.Fatalf("%s: %v", model, err)
		}
	}
	for range 5 {
		ask("v1", map[string]any{"image": readShared(t, "cat.bmp")})
	}
	for range 3 {
		ask("lstm", map[string]any{"input": make([]byte, 28*28)})
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	h := families["edge_agent_request_duration_seconds"]
	if h == nil || h.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("no request histogram:\n%s", body)
	}
	counts := map[string]uint64{}
	for _, m := range h.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["warm"] != "true" && labels["warm"] != "false" {
			t.Fatalf("request histogram without the warm label: %v", labels)
		}
		if labels["transport"] != "mqtt" {
			t.Fatalf("request histogram: transport %q, want mqtt (the requests were commands)", labels["transport"])
		}
		counts[labels["model"]] += m.GetHistogram().GetSampleCount()
	}
	if counts["v1"] != 5 || counts["lstm"] != 3 {
		t.Fatalf("request counts by model %v, want v1 5 and lstm 3", counts)
	}
	for _, name := range []string{"edge_agent_invoke_duration_seconds", "edge_agent_pool_bytes", "edge_agent_pool_budget_bytes",
		"edge_agent_evictions_total", "edge_agent_loads_total", "edge_agent_calibration_seconds_total", "edge_agent_startup_stage_seconds",
		"edge_agent_power_on_ac", "edge_agent_battery_percent", "edge_agent_temperature_max_celsius", "edge_agent_wakes_total",
		"edge_agent_outbox_messages", "edge_agent_mqtt_connected", "process_resident_memory_bytes"} {
		if families[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	promtoolCheck(t, body)

	waitFor(t, "this start's duration kept", func() bool { return len(a.Status().Metrics.Startups) == 1 })
	if st := a.Status().Metrics.Startups; st[0] <= 0 {
		t.Fatalf("startups %v, want this start's duration", st)
	}
	lat := a.Status().Metrics.Latency
	v1, lstm := lat["v1"], lat["lstm"]
	if v1.Requests != 5 || v1.Warm+v1.Cold != 5 || lstm.Requests != 3 || v1.E2EMs.P50 <= 0 || v1.InvokeMs.P99 < v1.InvokeMs.P50 || v1.E2EMs.P50 < v1.InvokeMs.P50 {
		t.Fatalf("status latency: %+v", lat)
	}
	if !strings.Contains(string(body), `model="v1"`) {
		t.Fatal("no model label in /metrics")
	}
}
