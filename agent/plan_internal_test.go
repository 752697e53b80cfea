package agent

import (
	"testing"
	"time"
)

// A fleet member's wake plans are staggered by default, a lone device's
// are not, and power.max_stagger, when larger, wins.
func TestFleetStaggerDefault(t *testing.T) {
	c := DefaultConfig()
	if got := c.policy().MaxStagger; got != 0 {
		t.Fatalf("a device without brokers staggers by %v", got)
	}
	c.MQTT.Brokers = []string{"tcp://broker:1883"}
	if got := c.policy().MaxStagger; got != time.Second {
		t.Fatalf("a fleet member staggers by %v, want 1s", got)
	}
	c.Power.MaxStagger = 5 * time.Second
	if got := c.policy().MaxStagger; got != 5*time.Second {
		t.Fatalf("power.max_stagger 5s gave %v", got)
	}
	c.Power.MaxStagger, c.Fleet.Enabled = 0, false
	if got := c.policy().MaxStagger; got != 0 {
		t.Fatalf("fleet off staggers by %v", got)
	}
}
