//go:build !race

package mqtt_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/mqtt"
)

// Close returns while clients keep connecting: mochi's own Close could
// deadlock there (a read lock taken twice while a connecting client waits
// for the write lock). Each round: clients dial in a loop, the broker
// closes, and Close must return. Not under -race: mochi v2.7.9 itself races
// between Close and a connection being accepted (NewClient), which the
// detector reports whoever closes; make test-long runs this.
func TestLocalBrokerClosesUnderLoad(t *testing.T) {
	for round := range 20 {
		b, err := mqtt.ServeLocal(mqtt.LocalOptions{Addr: "127.0.0.1:0", AllowAnonymous: true})
		if err != nil {
			t.Fatal(err)
		}
		addr := strings.TrimPrefix(b.URL(), "tcp://")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for c := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					conn, err := net.DialTimeout("tcp", addr, time.Second)
					if err != nil {
						continue
					}
					// A minimal MQTT 3.1.1 CONNECT with a client id of its own.
					id := fmt.Sprintf("c%d-%d", c, i%3)
					pkt := []byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, byte(len(id))}
					_, _ = conn.Write(append(pkt, id...))
					_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					_, _ = conn.Read(make([]byte, 4))
					_ = conn.Close()
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- b.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Close did not return while clients connect", round)
		}
		close(stop)
		wg.Wait()
	}
}
