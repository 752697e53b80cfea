package fleet_test

import (
	"testing"

	"github.com/edge-agent/edge-agent/agent/fleet"
)

// FuzzViewOffer: whatever a device publishes on a fleet topic, the view
// refuses it or holds a record whose key is that topic's and that
// re-encodes within the size limit; never a panic.
func FuzzViewOffer(f *testing.F) {
	good, _ := record().Encode()
	f.Add(fleet.Topic("edge", key), good)
	f.Add(fleet.Topic("edge", key), []byte(`{"schema":1}`))
	f.Add("edge/fleet/x/y/z/w", []byte(`{"schema":2,"facts":{}}`))
	f.Add(fleet.Topic("edge", key), []byte(`{"schema":1,"samples":1e400}`))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		v := fleet.NewView("edge", 4)
		if err := v.Offer(topic, payload); err != nil || len(payload) == 0 {
			return
		}
		r, err := fleet.Decode(payload)
		if err != nil {
			t.Fatalf("held a record that does not decode: %v", err)
		}
		if fleet.Topic("edge", r.Validity) != topic {
			t.Fatalf("held %q on %q", fleet.Topic("edge", r.Validity), topic)
		}
		if got, ok := v.Get(r.Validity); !ok || got.Device != r.Device {
			t.Fatal("the held record is not found by its key")
		}
		_ = r.Check(local()) // bounds checks of any decoded record never panic
	})
}
