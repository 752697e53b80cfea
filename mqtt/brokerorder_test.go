package mqtt_test

import (
	"fmt"
	"testing"

	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
)

// A subscription made after a retained publish was acknowledged gets that
// message once, as retained, and never again as a live copy. mochi
// acknowledges before it fans out; a subscribe landing between the two got
// both (TestConformanceRetained met it under load). The window is short,
// so the test goes through it many times.
func TestConformanceSubscribeAfterPubackSeesRetainedOnce(t *testing.T) {
	rounds := 300
	if testing.Short() {
		rounds = 60
	}
	forEachBroker(t, func(t *testing.T, addr string, v byte) {
		pub, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "pub"})
		sub, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "sub"})
		for i := range rounds {
			topic, id := fmt.Sprintf("o/%d", i), uint16(i%60000+1)
			publish(t, pub, id, topic, true, "value")
			subscribe(t, sub, id, topic)
			p := nextAcked(t, sub)
			if !p.Retain || p.Topic != topic || string(p.Payload) != "value" {
				t.Fatalf("round %d: on subscribing %+v %q, want the retained value", i, p, p.Payload)
			}
			publish(t, pub, id, topic, false, "marker")
			if p := nextAcked(t, sub); p.Retain || string(p.Payload) != "marker" {
				t.Fatalf("round %d: after the retained value came %+v %q, want the live marker (a second copy?)", i, p, p.Payload)
			}
		}
	})
}

// nextAcked is the next PUBLISH, acknowledged when it asks to be.
func nextAcked(t *testing.T, c *mqtttest.Raw) mqtttest.RawPacket {
	t.Helper()
	p := next(t, c, mqtttest.TypePublish)
	if p.QoS > 0 {
		if err := c.Puback(p.ID); err != nil {
			t.Fatal(err)
		}
	}
	return p
}
