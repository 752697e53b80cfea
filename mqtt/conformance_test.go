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

	paho "github.com/eclipse/paho.mqtt.golang"

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

// next reads packets until one of type typ arrives, failing the test on
// a timeout; PUBLISHes met on the way are returned too when typ is
// TypePublish only.
func next(t *testing.T, c *mqtttest.Raw, typ byte) mqtttest.RawPacket {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := c.Next(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for packet type %d: %v", typ, err)
		}
		if p.Type == typ {
			return p
		}
	}
}

func subscribe(t *testing.T, c *mqtttest.Raw, id uint16, filter string) {
	t.Helper()
	if err := c.Subscribe(id, filter, 1); err != nil {
		t.Fatal(err)
	}
	if p := next(t, c, mqtttest.TypeSuback); p.ID != id || len(p.Codes) != 1 || p.Codes[0] != 1 {
		t.Fatalf("SUBACK for %s: %+v", filter, p)
	}
}

func publish(t *testing.T, c *mqtttest.Raw, id uint16, topic string, retain bool, payload string) {
	t.Helper()
	if err := c.Publish(id, topic, 1, retain, []byte(payload)); err != nil {
		t.Fatal(err)
	}
	if p := next(t, c, mqtttest.TypePuback); p.ID != id {
		t.Fatalf("PUBACK for %s: %+v", topic, p)
	}
}

// Retained: a new subscriber gets the last retained message with the
// retain flag; an empty retained payload clears it (the next message
// seen is a live marker, not the cleared one).
func TestConformanceRetained(t *testing.T) {
	forEachBroker(t, func(t *testing.T, addr string, v byte) {
		pub, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "pub"})
		publish(t, pub, 1, "r/a", true, "first")
		publish(t, pub, 2, "r/a", true, "second")
		sub, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "sub"})
		subscribe(t, sub, 1, "r/#")
		if p := next(t, sub, mqtttest.TypePublish); !p.Retain || p.Topic != "r/a" || string(p.Payload) != "second" {
			t.Fatalf("retained: %+v %q", p, p.Payload)
		}
		publish(t, pub, 3, "r/a", true, "")
		// Delivered live to the present subscriber; once it has been, a
		// new subscriber cannot meet it in flight either.
		if p := next(t, sub, mqtttest.TypePublish); p.Topic != "r/a" || len(p.Payload) != 0 {
			t.Fatalf("the clearing message: %+v %q", p, p.Payload)
		}
		late, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "late"})
		subscribe(t, late, 1, "r/#")
		publish(t, pub, 4, "r/marker", false, "live")
		if p := next(t, late, mqtttest.TypePublish); p.Retain || p.Topic != "r/marker" {
			t.Fatalf("after clearing, the first message is %+v %q, want the live marker", p, p.Payload)
		}
	})
}

// Last will: an abrupt close publishes it (retained, so a later
// subscriber sees it too); a DISCONNECT does not.
func TestConformanceLastWill(t *testing.T) {
	forEachBroker(t, func(t *testing.T, addr string, v byte) {
		watch, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "watch"})
		subscribe(t, watch, 1, "w/#")
		will := mqtttest.RawOptions{Version: v, ClientID: "dev", WillTopic: "w/dev/status", WillPayload: []byte("offline"), WillRetain: true, KeepAlive: 30}
		polite, _ := mqtttest.DialRaw(t, addr, will)
		polite.Disconnect()
		pub, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "pub"})
		publish(t, pub, 1, "w/marker", false, "after the clean disconnect")
		if p := next(t, watch, mqtttest.TypePublish); p.Topic != "w/marker" {
			t.Fatalf("a clean DISCONNECT sent the will: %+v %q", p, p.Payload)
		}
		rude, _ := mqtttest.DialRaw(t, addr, will)
		rude.Close()
		if p := next(t, watch, mqtttest.TypePublish); p.Topic != "w/dev/status" || string(p.Payload) != "offline" {
			t.Fatalf("will: %+v %q", p, p.Payload)
		}
		late, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "late"})
		subscribe(t, late, 1, "w/dev/status")
		if p := next(t, late, mqtttest.TypePublish); !p.Retain || string(p.Payload) != "offline" {
			t.Fatalf("retained will: %+v %q", p, p.Payload)
		}
	})
}

// Persistent session: QoS 1 messages published while the client is away
// are delivered when it comes back (session present). Not their order:
// mochi-mqtt resends a session's queue sorted by creation second only
// (docs/mqtt-broker.md), and the agent's commands do not depend on it.
func TestConformancePersistentSession(t *testing.T) {
	forEachBroker(t, func(t *testing.T, addr string, v byte) {
		o := mqtttest.RawOptions{Version: v, ClientID: "agent-session", Persistent: true}
		c, _ := mqtttest.DialRaw(t, addr, o)
		subscribe(t, c, 1, "q/#")
		c.Disconnect()
		pub, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "pub"})
		for i := range 3 {
			publish(t, pub, uint16(i+1), "q/cmd", false, fmt.Sprint(i))
		}
		c, ack := mqtttest.DialRaw(t, addr, o)
		if !ack.SessionPresent {
			t.Fatal("session not present on reconnect")
		}
		got := map[string]bool{}
		for range 3 {
			p := next(t, c, mqtttest.TypePublish)
			if p.QoS != 1 || p.Topic != "q/cmd" || got[string(p.Payload)] {
				t.Fatalf("queued message: %+v %q (got %v)", p, p.Payload, got)
			}
			got[string(p.Payload)] = true
			if err := c.Puback(p.ID); err != nil {
				t.Fatal(err)
			}
		}
		if !got["0"] || !got["1"] || !got["2"] {
			t.Fatalf("queued messages: got %v, want 0 1 2", got)
		}
	})
}

// QoS 1 redelivery: a message not acknowledged when the connection drops
// is sent again, DUP set, on reconnect to the session. Meanwhile the
// client published a QoS 1 message of its own with the same packet id:
// a different direction, so it must not count as the acknowledgement
// (the embedded broker dropped the message before).
func TestConformanceQoS1Redelivery(t *testing.T) {
	forEachBroker(t, func(t *testing.T, addr string, v byte) {
		o := mqtttest.RawOptions{Version: v, ClientID: "redeliver", Persistent: true}
		c, _ := mqtttest.DialRaw(t, addr, o)
		subscribe(t, c, 1, "d/#")
		pub, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "pub"})
		publish(t, pub, 1, "d/cmd", false, "do it")
		first := next(t, c, mqtttest.TypePublish)
		if first.Dup || string(first.Payload) != "do it" {
			t.Fatalf("first delivery: %+v %q", first, first.Payload)
		}
		publish(t, c, first.ID, "elsewhere/reply", false, "same id, other direction")
		c.Close() // no PUBACK
		c, ack := mqtttest.DialRaw(t, addr, o)
		if !ack.SessionPresent {
			t.Fatal("session not present on reconnect")
		}
		again := next(t, c, mqtttest.TypePublish)
		if !again.Dup || again.ID != first.ID || string(again.Payload) != "do it" {
			t.Fatalf("redelivery: %+v %q, want DUP, id %d", again, again.Payload, first.ID)
		}
		if err := c.Puback(again.ID); err != nil {
			t.Fatal(err)
		}
	})
}

// The same with paho, the client library the agent and most Go programs
// use (MQTT 3.1.1): two Subscribe calls without waiting in between, as
// Home Assistant does, each granted, every retained message delivered.
// Paho acknowledges at once, so the broker could have the PUBACKs before
// the second SUBSCRIBE; in practice it has not (the embedded broker
// without the packet-id hook answered 0x91 in 5 runs of 5); the raw test
// above pins the in-flight case down.
func TestPahoPipelinedSubscribes(t *testing.T) {
	for _, b := range brokersUnderTest() {
		t.Run(b.name, func(t *testing.T) {
			addr := b.start(t)
			retained := map[string]string{
				"edge/dev/status": "online", "edge/dev/telemetry/startup": "s", "edge/dev/metrics": "m",
				"homeassistant/sensor/dev/config": "d1", "homeassistant/button/dev/config": "d2",
			}
			publishRetained(t, addr, 4, retained)
			got := make(chan string, 16)
			c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("ha-like").SetAutoReconnect(false))
			if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("connect: %v", tok.Error())
			}
			defer c.Disconnect(100)
			handler := func(_ paho.Client, m paho.Message) { got <- m.Topic() }
			toks := []paho.Token{c.Subscribe("edge/dev/#", 1, handler), c.Subscribe("homeassistant/#", 1, handler)}
			for i, tok := range toks {
				if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatalf("subscribe %d: %v", i, tok.Error())
				}
				for f, q := range tok.(*paho.SubscribeToken).Result() {
					if q != 1 {
						t.Fatalf("subscribe %s: granted 0x%02x, want 1", f, q)
					}
				}
			}
			seen := map[string]bool{}
			for len(seen) < len(retained) {
				select {
				case topic := <-got:
					seen[topic] = true
				case <-time.After(5 * time.Second):
					t.Fatalf("retained messages seen: %v of %d", seen, len(retained))
				}
			}
		})
	}
}

// Every kind of packet that carries an id of the client's own space
// (UNSUBSCRIBE, QoS 1 and QoS 2 PUBLISH and its PUBREL) uses the ids of
// the broker's unacknowledged publishes to that client, and each is
// answered with its own id and success, and the QoS 2 message is
// delivered once.
func TestClientPacketIDsAreTheirOwn(t *testing.T) {
	forEachBroker(t, func(t *testing.T, addr string, v byte) {
		publishRetained(t, addr, v, map[string]string{"c/1": "a", "c/2": "b", "c/3": "c", "c/4": "d"})
		watch, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "watch"})
		subscribe(t, watch, 1, "out/#")
		c, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "ids"})
		subscribe(t, c, 9, "c/#")
		var inflight []uint16
		for range 4 {
			inflight = append(inflight, next(t, c, mqtttest.TypePublish).ID) // not acknowledged yet
		}
		if err := c.Unsubscribe(inflight[0], "nothing/#"); err != nil {
			t.Fatal(err)
		}
		if p := next(t, c, mqtttest.TypeUnsuback); p.ID != inflight[0] || len(p.Codes) > 0 && p.Codes[0] >= 0x80 {
			t.Fatalf("UNSUBACK with the id of an in-flight publish: %+v", p)
		}
		publish(t, c, inflight[1], "out/qos1", false, "one")
		if err := c.Publish(inflight[2], "out/qos2", 2, false, []byte("two")); err != nil {
			t.Fatal(err)
		}
		if p := next(t, c, mqtttest.TypePubrec); p.ID != inflight[2] || len(p.Codes) > 0 && p.Codes[0] >= 0x80 {
			t.Fatalf("PUBREC: %+v", p)
		}
		if err := c.Pubrel(inflight[2]); err != nil {
			t.Fatal(err)
		}
		if p := next(t, c, mqtttest.TypePubcomp); p.ID != inflight[2] || len(p.Codes) > 0 && p.Codes[0] != 0 {
			t.Fatalf("PUBCOMP: %+v", p)
		}
		for _, want := range []string{"out/qos1", "out/qos2"} {
			p := next(t, watch, mqtttest.TypePublish)
			if p.Topic != want {
				t.Fatalf("watcher got %s %q, want %s", p.Topic, p.Payload, want)
			}
			if err := watch.Puback(p.ID); err != nil {
				t.Fatal(err)
			}
		}
		for _, id := range inflight {
			if err := c.Puback(id); err != nil {
				t.Fatal(err)
			}
		}
		// Delivered once: the next message the watcher sees is a marker.
		publish(t, c, 1, "out/done", false, "done")
		if p := next(t, watch, mqtttest.TypePublish); p.Topic != "out/done" {
			t.Fatalf("after the QoS 2 message the watcher got %s %q, want the marker", p.Topic, p.Payload)
		}
	})
}
