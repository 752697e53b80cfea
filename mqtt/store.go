package mqtt

import (
	"strings"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// resendFreeStore is paho's memory store without our outgoing publishes.
// With a persistent session paho resends what its store holds on reconnect,
// in store order, which overtook the outbox's own in-order resend; the
// outbox is the one source of resends, oldest first.
type resendFreeStore struct{ paho.Store }

func newResendFreeStore() resendFreeStore { return resendFreeStore{paho.NewMemoryStore()} }

func (s resendFreeStore) Put(key string, m packets.ControlPacket) {
	if _, ok := m.(*packets.PublishPacket); ok && strings.HasPrefix(key, "o.") {
		return
	}
	s.Store.Put(key, m)
}
