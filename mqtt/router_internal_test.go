package mqtt

import (
	"bytes"
	"testing"
	"time"
)

// message is a received PUBLISH as paho hands it to a handler.
type message struct {
	topic   string
	payload []byte
}

func (m message) Duplicate() bool   { return false }
func (m message) Qos() byte         { return 1 }
func (m message) Retained() bool    { return false }
func (m message) Topic() string     { return m.topic }
func (m message) MessageID() uint16 { return 1 }
func (m message) Payload() []byte   { return m.payload }
func (m message) Ack()              {}

// paho runs every handler on its one router: while it runs, no other
// message is handled and no PUBACK goes out. Queuing a 1 MiB JSON command
// must not cost the router a scan of it (about 5–10 ms here): its handler
// takes about as long as for a 10-byte one. The envelope is read by the
// worker, which still finds the id.
func TestRouterDoesNotReadTheCommand(t *testing.T) {
	c, err := New(Options{Brokers: []string{"tcp://127.0.0.1:1"}, Device: "dev1", MaxPayload: 2 << 20, QueueSize: 4}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := append([]byte(`{"id":"r1","image":"`), bytes.Repeat([]byte("QUJD"), 1<<18)...)
	big = append(big, `"}`...)
	handle := func(payload []byte) time.Duration {
		best := time.Hour
		for range 15 {
			t0 := time.Now()
			c.onMessage(nil, message{"edge/dev1/cmd/infer", payload})
			best = min(best, time.Since(t0))
			select {
			case cmd := <-c.queue:
				if err := envelope(&cmd); err != nil || cmd.ID != "r1" {
					t.Fatalf("queued %q: id %q, %v", cmd.Payload[:20], cmd.ID, err)
				}
			default:
				t.Fatalf("a %d-byte command was not queued: %+v", len(payload), c.Stats())
			}
		}
		return best
	}
	small, large := handle([]byte(`{"id":"r1"}`)), handle(big)
	if large > 50*small+50*time.Microsecond {
		t.Fatalf("queuing a %d-byte command took the router %v, a 10-byte one %v", len(big), large, small)
	}
}
