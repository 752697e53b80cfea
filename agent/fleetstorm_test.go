package agent_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// TestBrokerRestartWithTenAgents: ten agents lose their broker together
// while producing telemetry. After the restart every one reconnects, no
// queued event is lost, and the reconnects are spread out by the jittered
// backoff (the spread is logged) instead of arriving in lockstep.
func TestBrokerRestartWithTenAgents(t *testing.T) {
	const agents, perAgent = 10, 40
	b := mqtttest.Start(t, mqtttest.Options{})
	proxy := mqtttest.StartProxy(t, b)
	xor := agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")}
	running := make([]*agent.Agent, agents)
	for i := range running {
		cfg := mqttConfig(t, proxy.URL(), xor)
		cfg.MQTT.Device = fmt.Sprintf("node%d", i)
		cfg.MQTT.ReconnectMin, cfg.MQTT.ReconnectMax = 250*time.Millisecond, 4*time.Second
		running[i] = start(t, cfg, agent.Options{})
		defer running[i].Close()
	}
	status := b.Subscribe(t, "status-watch", "edge/+/status")
	events := b.Subscribe(t, "event-watch", "edge/+/telemetry/events")

	// The broker dies; the agents keep producing while it is down.
	proxy.Hold()
	b.Kill()
	for i, a := range running {
		for n := 1; n <= perAgent; n++ {
			if err := a.Event("test", map[string]any{"n": n, "agent": i}); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(2 * time.Second) // the outage: the agents' backoff grows
	subs := status.Subscribed() + events.Subscribed()
	connects := b.LogLines("New client connected")
	b.Restart()
	// The test's subscribers resubscribe before any agent may reconnect: a
	// restarted broker delivers only to subscribers it knows.
	deadline := time.Now().Add(30 * time.Second)
	for status.Subscribed()+events.Subscribed() < subs+2 {
		if time.Now().After(deadline) {
			t.Fatal("the test subscribers did not resubscribe after the broker restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// What the status subscriber got before (the retained "online" of the
	// first connections) is not a reconnect.
	for len(status.Chan()) > 0 {
		<-status.Chan()
	}
	released := time.Now()
	proxy.Release()

	online := map[string]time.Duration{}
	got := map[string]map[int]bool{}
	complete := func() bool {
		if len(online) < agents || len(got) < agents {
			return false
		}
		for _, ns := range got {
			if len(ns) < perAgent {
				return false
			}
		}
		return true
	}
	timeout := time.After(2 * time.Minute)
	for !complete() {
		select {
		case m := <-status.Chan():
			dev := strings.Split(m.Topic, "/")[1]
			if _, seen := online[dev]; !seen && strings.Contains(string(m.Payload), `"status":"online"`) {
				online[dev] = time.Since(released)
			}
		case m := <-events.Chan():
			var e struct {
				Event string `json:"event"`
				N     int    `json:"n"`
			}
			if json.Unmarshal(m.Payload, &e) != nil || e.Event != "test" {
				continue
			}
			dev := strings.Split(m.Topic, "/")[1]
			if got[dev] == nil {
				got[dev] = map[int]bool{}
			}
			got[dev][e.N] = true
		case <-timeout:
			counts := map[string]int{}
			for d, ns := range got {
				counts[d] = len(ns)
			}
			t.Fatalf("after 2 min: %d of %d agents back online, events per agent %v (want %d each)", len(online), agents, counts, perAgent)
		}
	}
	times := make([]time.Duration, 0, agents)
	for _, d := range online {
		times = append(times, d)
	}
	slices.Sort(times)
	t.Logf("%d agents back online %v–%v after the broker was reachable again (spread %v; median %v); all %d queued events of each delivered; the broker logged %d client connections after its restart",
		agents, times[0].Round(time.Millisecond), times[agents-1].Round(time.Millisecond),
		(times[agents-1] - times[0]).Round(time.Millisecond), times[agents/2].Round(time.Millisecond), perAgent,
		b.LogLines("New client connected")-connects)
}
