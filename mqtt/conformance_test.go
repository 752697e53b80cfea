package mqtt_test

// What the agent relies on from a broker, held to one behaviour on both
// the brokers it meets: a real mosquitto and the embedded one. Each test
// is one table over both, with a raw client (mqtttest.Raw) written
// against the MQTT 3.1.1 and 5.0 specifications, so the packets and their
// order are exactly what the test says.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
)

type brokerUnderTest struct {
	name  string
	start func(t *testing.T) string // host:port
}

func brokersUnderTest() []brokerUnderTest {
	return []brokerUnderTest{
		{"mosquitto", func(t *testing.T) string {
			b := mqtttest.Start(t, mqtttest.Options{})
			return strings.TrimPrefix(b.URL(), "tcp://")
		}},
		{"embedded", func(t *testing.T) string {
			b, err := mqtt.ServeLocal(mqtt.LocalOptions{Addr: "127.0.0.1:0"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return b.Addr()
		}},
	}
}

// forEachBroker runs f for each broker and protocol version (4 = 3.1.1,
// 5 = 5.0).
func forEachBroker(t *testing.T, f func(t *testing.T, addr string, v byte)) {
	for _, b := range brokersUnderTest() {
		for _, v := range []byte{4, 5} {
			t.Run(fmt.Sprintf("%s/v%s", b.name, map[byte]string{4: "3.1.1", 5: "5.0"}[v]), func(t *testing.T) {
				f(t, b.start(t), v)
			})
		}
	}
}

// publishRetained sets retained QoS 1 messages and waits for their PUBACKs.
func publishRetained(t *testing.T, addr string, v byte, msgs map[string]string) {
	t.Helper()
	c, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "setter"})
	id := uint16(1)
	for topic, payload := range msgs {
		if err := c.Publish(id, topic, 1, true, []byte(payload)); err != nil {
			t.Fatal(err)
		}
		p, err := c.Next(5 * time.Second)
		if err != nil || p.Type != mqtttest.TypePuback || p.ID != id {
			t.Fatalf("PUBACK for %s: %+v %v", topic, p, err)
		}
		id++
	}
	c.Disconnect()
}

// Two SUBSCRIBEs back to back (one write, no wait for the first SUBACK),
// while the first filter's retained QoS 1 messages are in flight (not
// acknowledged until both SUBACKs are in): both are granted and every
// retained message arrives. The client's SUBSCRIBE ids (1, 2, 3) are the
// ones the broker also uses for its own publishes to it: MQTT keeps the
// two directions' packet identifiers apart (3.1.1 §2.3.1, 5.0 §2.2.1),
// so that must not matter (the embedded broker answered 0x91, "packet
// identifier in use", before).
func TestPipelinedSubscribesGetRetained(t *testing.T) {
	forEachBroker(t, func(t *testing.T, addr string, v byte) {
		retained := map[string]string{
			"edge/dev/status":                 "online",
			"edge/dev/telemetry/startup":      "started",
			"edge/dev/metrics":                "m",
			"homeassistant/sensor/dev/config": "discovery",
			"homeassistant/button/dev/config": "discovery-2",
		}
		publishRetained(t, addr, v, retained)
		c, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "pipelined"})
		var batch []byte
		filters := map[uint16]string{1: "edge/dev/#", 2: "homeassistant/#", 3: "edge/dev/status"}
		for id := uint16(1); id <= 3; id++ {
			batch = append(batch, c.SubscribeEncoded(id, filters[id], 1)...)
		}
		if err := c.Write(batch); err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		subacks := map[uint16][]byte{}
		var unacked []uint16
		deadline := time.Now().Add(10 * time.Second)
		// edge/dev/status matches two filters: the third subscription's
		// retained copy arrives too (once per subscription at least).
		for len(subacks) < 3 || len(got) < len(retained) {
			p, err := c.Next(time.Until(deadline))
			if err != nil {
				t.Fatalf("after SUBACKs %v and retained %v: %v", subacks, got, err)
			}
			switch p.Type {
			case mqtttest.TypeSuback:
				subacks[p.ID] = p.Codes
				if len(p.Codes) != 1 || p.Codes[0] != 1 {
					t.Fatalf("SUBACK %d (%s): codes % x, want 01 (QoS 1 granted)", p.ID, filters[p.ID], p.Codes)
				}
			case mqtttest.TypePublish:
				if !p.Retain || p.QoS != 1 || retained[p.Topic] != string(p.Payload) {
					t.Fatalf("unexpected publish %+v %q", p, p.Payload)
				}
				got[p.Topic]++
				unacked = append(unacked, p.ID) // held until both SUBACKs are in
			}
			if len(subacks) == 3 {
				for _, id := range unacked {
					if err := c.Puback(id); err != nil {
						t.Fatal(err)
					}
				}
				unacked = nil
			}
		}
		for topic := range retained {
			if got[topic] == 0 {
				t.Errorf("retained %s never arrived (got %v)", topic, got)
			}
		}
	})
}
