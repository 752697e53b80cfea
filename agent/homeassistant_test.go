package agent_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// Home Assistant discovery: retained configs, valid JSON with unique_id,
// device and the status topic as availability; their state topics receive
// values; Home Assistant coming back online gets them again; a button
// works; `homeassistant remove` clears them.
func TestHomeAssistantDiscovery(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	cfg := testConfig(t, agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	cfg.MQTT.Brokers, cfg.MQTT.Device = []string{b.URL()}, "ha1"
	cfg.MQTT.MetricsInterval = time.Second
	cfg.HomeAssistant.Enabled = true
	a := start(t, cfg, agent.Options{})
	defer a.Close()

	disc := b.Subscribe(t, "ha", "homeassistant/#")
	configs := map[string]map[string]any{}
	deadline := time.After(15 * time.Second)
	for len(configs) < 10 {
		select {
		case m := <-disc.Chan():
			if !strings.HasSuffix(m.Topic, "/config") {
				continue
			}
			if !m.Retained {
				t.Fatalf("%s not retained", m.Topic)
			}
			var c map[string]any
			if err := json.Unmarshal(m.Payload, &c); err != nil {
				t.Fatalf("%s: not JSON: %v", m.Topic, err)
			}
			configs[m.Topic] = c
		case <-deadline:
			t.Fatalf("%d discovery configs after 15 s: %v", len(configs), configs)
		}
	}
	stateTopics := map[string]bool{}
	for topic, c := range configs {
		dev, _ := c["device"].(map[string]any)
		if c["unique_id"] == "" || c["unique_id"] == nil || dev == nil || dev["identifiers"] == nil || dev["sw_version"] == nil {
			t.Fatalf("%s: %v", topic, c)
		}
		if c["availability_topic"] != "edge/ha1/status" {
			t.Fatalf("%s: availability_topic %v", topic, c["availability_topic"])
		}
		if st, ok := c["state_topic"].(string); ok {
			stateTopics[st] = true
		}
	}
	if !stateTopics["edge/ha1/ha/state"] || !stateTopics["edge/ha1/status"] {
		t.Fatalf("state topics %v", stateTopics)
	}
	sub := b.Subscribe(t, "ha-values", "edge/ha1/ha/state")
	var st map[string]any
	if err := json.Unmarshal(sub.Next(t, 10*time.Second).Payload, &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"warm_models", "cold_starts_per_hour", "p95_ms", "first_request_ms", "rss_bytes", "battery_percent", "temperature_c"} {
		if _, ok := st[k]; !ok {
			t.Fatalf("state lacks %s: %v", k, st)
		}
	}
	if st["rss_bytes"].(float64) <= 0 {
		t.Fatalf("state %v", st)
	}

	// Home Assistant restarts: every config is published again.
	again := b.Subscribe(t, "ha-again", "homeassistant/sensor/#")
	for range 7 { // the retained ones first
		again.Next(t, 10*time.Second)
	}
	disc.Publish(t, "homeassistant/status", []byte("online"))
	if m := again.Next(t, 10*time.Second); m.Retained || !strings.HasSuffix(m.Topic, "/config") {
		t.Fatalf("after homeassistant/status online: %+v", m)
	}

	// The wake button: a wake from a command (events leave the outbox for
	// the broker here, so watch them there).
	events := b.Subscribe(t, "ha-events", "edge/ha1/telemetry/events")
	disc.Publish(t, "edge/ha1/cmd/wake", []byte("{}"))
	for {
		var e struct{ Event, Source string }
		if json.Unmarshal(events.Next(t, 15*time.Second).Payload, &e) == nil && e.Event == "wake" && e.Source == "command" {
			break
		}
	}

	// Removal clears every config.
	if r := cli(t, "homeassistant", "remove", "--broker", b.URL(), "--device", "ha1"); r.code != 0 {
		t.Fatalf("homeassistant remove: exit %d\n%s", r.code, r.stderr)
	}
	gone := b.Subscribe(t, "ha-gone", "homeassistant/#")
	select {
	case m := <-gone.Chan():
		t.Fatalf("a config left after remove: %s %s", m.Topic, m.Payload)
	case <-time.After(500 * time.Millisecond):
	}
}
