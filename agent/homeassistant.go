package agent

// Home Assistant MQTT discovery: with [homeassistant] enabled the agent
// announces itself as one device (retained configs under the discovery
// prefix) with sensors, a connectivity binary sensor and buttons, all
// available while its retained status says "online". The configs are
// published on every connection and whenever Home Assistant says it is
// online again; the sensors' values go to <prefix>/<device>/ha/state every
// metrics interval. `edge-agent homeassistant remove` (uninstall.sh
// --purge) clears the configs.

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/agent/hardware"
	"github.com/edge-agent/edge-agent/agent/metrics"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite"
)

// homeAssistant announces the agent to Home Assistant (discovery configs)
// and publishes its sensors' state. Its loop runs under the agent's
// runCtx; it holds no lock.
type homeAssistant struct {
	homeAssistantDeps
	kick chan struct{} // publish the discovery configs (cap 1)
}

// homeAssistantDeps is what Home Assistant's part asks of the agent. pool
// and mq are functions: both exist only once the agent has started.
type homeAssistantDeps struct {
	log     *slog.Logger
	config  func() *Config
	hw      func() hardware.Info // read by the start
	lat     *metrics.Latencies
	pool    func() *tflite.Pool
	mq      func() *mqtt.Client
	memory  func() power.Memory
	power   func() *power.Reader
	publish func(topic string, retain bool, v any) error
}

func newHomeAssistant(d homeAssistantDeps) *homeAssistant {
	return &homeAssistant{homeAssistantDeps: d, kick: make(chan struct{}, 1)}
}

// HomeAssistantConfig is [homeassistant].
type HomeAssistantConfig struct {
	Enabled bool `toml:"enabled"`
	// DiscoveryPrefix is Home Assistant's discovery prefix. Default
	// "homeassistant".
	DiscoveryPrefix string `toml:"discovery_prefix"`
}

// haEntity is one entity's discovery config (the fields that vary).
type haEntity struct {
	component, object string
	fields            map[string]any
}

// haState is what the sensors read (value_json.<field>).
type haState struct {
	WarmModels       int      `json:"warm_models"`
	ColdStartsPerH   float64  `json:"cold_starts_per_hour"`
	P95Ms            float64  `json:"p95_ms"`
	FirstAfterWakeMs float64  `json:"first_request_ms"`
	RSSBytes         int64    `json:"rss_bytes"`
	BatteryPercent   *int     `json:"battery_percent"`
	TemperatureC     *float64 `json:"temperature_c"`
}

func haNode(device string) string { return "edge_agent_" + strings.ReplaceAll(device, ".", "_") }

// haEntities are the device's entities.
func haEntities(prefix, device string) []haEntity {
	base := prefix + "/" + device + "/"
	state := base + "ha/state"
	sensor := func(object, name, field, unit, class string) haEntity {
		f := map[string]any{"name": name, "state_topic": state, "value_template": "{{ value_json." + field + " }}", "state_class": "measurement"}
		if unit != "" {
			f["unit_of_measurement"] = unit
		}
		if class != "" {
			f["device_class"] = class
		}
		return haEntity{"sensor", object, f}
	}
	return []haEntity{
		sensor("warm_models", "Warm models", "warm_models", "", ""),
		sensor("cold_starts_per_hour", "Cold starts per hour", "cold_starts_per_hour", "1/h", ""),
		sensor("p95_latency", "p95 latency", "p95_ms", "ms", "duration"),
		sensor("first_request_latency", "First request after wake", "first_request_ms", "ms", "duration"),
		sensor("rss", "Memory (RSS)", "rss_bytes", "B", "data_size"),
		sensor("battery", "Battery", "battery_percent", "%", "battery"),
		sensor("temperature", "Temperature", "temperature_c", "°C", "temperature"),
		{"binary_sensor", "connectivity", map[string]any{"name": "Connected", "device_class": "connectivity",
			"state_topic": base + "status", "value_template": "{{ value_json.status }}", "payload_on": "online", "payload_off": "offline"}},
		{"button", "wake", map[string]any{"name": "Wake", "command_topic": base + "cmd/wake", "payload_press": "{}"}},
		{"button", "rescan", map[string]any{"name": "Rescan models", "command_topic": base + "cmd/rescan", "payload_press": "{}"}},
	}
}

// discovery is every discovery topic with its retained config.
func (h *homeAssistant) discovery() map[string][]byte {
	cfg := h.config()
	dev, prefix := cfg.device(), cfg.MQTT.Prefix
	node := haNode(dev)
	hw := h.hw()
	model := hw.Board
	if model == "" {
		model = hw.Arch + " " + hw.CPUModel
	}
	device := map[string]any{"identifiers": []string{node}, "name": "edge-agent " + dev, "manufacturer": "edge-agent",
		"model": strings.TrimSpace(model), "sw_version": Version}
	out := map[string][]byte{}
	for _, e := range haEntities(prefix, dev) {
		f := map[string]any{"unique_id": node + "_" + e.object, "object_id": node + "_" + e.object, "device": device,
			"availability_topic": prefix + "/" + dev + "/status", "availability_template": "{{ value_json.status }}",
			"payload_available": "online", "payload_not_available": "offline"}
		for k, v := range e.fields {
			f[k] = v
		}
		b, _ := json.Marshal(f)
		out[cfg.HomeAssistant.DiscoveryPrefix+"/"+e.component+"/"+node+"/"+e.object+"/config"] = b
	}
	return out
}

// state reads the sensors' values now.
func (h *homeAssistant) state() haState {
	st := haState{WarmModels: h.pool().Stats().WarmModels, RSSBytes: h.memory().RSSBytes, FirstAfterWakeMs: ms(h.lat.LastFirst())}
	for _, r := range h.lat.Snapshot(time.Now(), false) {
		st.ColdStartsPerH += r.ColdPerHour
		st.P95Ms = max(st.P95Ms, r.E2EMs.P95) // the slowest model's
	}
	p := h.power().Read()
	if p.Battery != nil {
		st.BatteryPercent = p.Battery.Capacity
	}
	st.TemperatureC = p.MaxTempC
	return st
}

// loop publishes the discovery configs when kicked (a connection, Home
// Assistant back online) and the sensors' state every metrics interval.
func (h *homeAssistant) loop(ctx context.Context) {
	tick := time.NewTicker(h.config().MQTT.MetricsInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
			for topic, b := range h.discovery() {
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := h.mq().PublishNow(pctx, topic, true, b)
				cancel()
				if err != nil {
					h.log.Warn("homeassistant: discovery not published; again on the next connection", "topic", topic, "err", err)
					break
				}
			}
		case <-tick.C:
		}
		if err := h.publish("ha/state", true, h.state()); err != nil {
			h.log.Error("homeassistant: state not queued", "err", err)
		}
	}
}

// kickHA asks loop to publish the discovery configs (never blocks).
func (h *homeAssistant) kickHA() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// options wires discovery into the MQTT client's options.
func (h *homeAssistant) options(o *mqtt.Options) {
	ha := h.config().HomeAssistant
	if !ha.Enabled {
		return
	}
	o.OnConnect = chain(o.OnConnect, h.kickHA)
	o.Watch[ha.DiscoveryPrefix+"/status"] = func(_ string, p []byte) {
		if string(p) == "online" { // Home Assistant restarted: announce again
			h.kickHA()
		}
	}
}

// RemoveHomeAssistant clears the device's discovery configs (empty
// retained messages): Home Assistant forgets the device.
func RemoveHomeAssistant(ctx context.Context, cfg Config, o mqtt.Options) error {
	dev := cfg.device()
	msgs := map[string][]byte{}
	for _, e := range haEntities(cfg.MQTT.Prefix, dev) {
		msgs[cfg.HomeAssistant.DiscoveryPrefix+"/"+e.component+"/"+haNode(dev)+"/"+e.object+"/config"] = nil
	}
	return mqtt.PublishOnce(ctx, o, true, msgs)
}
