package mqtt

// MQTT keeps the two directions' packet identifiers apart (3.1.1 §2.3.1,
// 5.0 §2.2.1): the ids a client gives its SUBSCRIBE, UNSUBSCRIBE and QoS >
// 0 PUBLISH are its own, whatever ids the server uses for the messages it
// sends that client. mochi-mqtt (v2.7.9, the newest version served)
// keeps one in-flight table per client for both and looks the client's
// ids up in it:
// a SUBSCRIBE whose id equals one of the server's unacknowledged publishes
// (retained QoS 1 messages of an earlier subscription, say) gets SUBACK
// 0x91 "packet identifier in use", an UNSUBSCRIBE the same, and a client's
// QoS 1 PUBLISH silently deletes the server's own in-flight message of
// that id (it is then never redelivered).
//
// packetIDs fixes that from outside, as a hook: every id the client chose
// is swapped, as the packet is read, for an id that is in neither
// direction's use (the "internal" id, half the id space away from the
// server's last outbound id, so mochi's own allocation, which counts up
// from there, does not reach it while the exchange lasts), and swapped back
// in the acknowledgement as it is written (SUBACK, UNSUBACK, PUBACK,
// PUBREC, PUBCOMP). A QoS 2 exchange keeps its pair until PUBCOMP, and
// across reconnects of a persistent session.

import (
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

type packetIDs struct {
	mochi.HookBase

	// mu guards clients and everything in them.
	mu      sync.Mutex
	clients map[string]*idPairs // by client id (a session)
}

// idPairs are one session's swapped ids.
type idPairs struct {
	internal map[uint16]uint16 // the client's id → the id mochi sees
	client   map[uint16]uint16 // and back
	lastOut  uint16            // the last id the server gave its own publish
}

func newPacketIDs() *packetIDs { return &packetIDs{clients: map[string]*idPairs{}} }

func (h *packetIDs) ID() string { return "packet-id-spaces" }

func (h *packetIDs) Provides(b byte) bool {
	switch b {
	case mochi.OnPacketRead, mochi.OnPacketEncode, mochi.OnSessionEstablished, mochi.OnDisconnect:
		return true
	}
	return false
}

// clientSpace reports whether a packet from the client carries an id of
// the client's own space.
func clientSpace(pk packets.Packet) bool {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		return pk.FixedHeader.Qos > 0
	case packets.Pubrel, packets.Subscribe, packets.Unsubscribe:
		return true
	}
	return false
}

func (h *packetIDs) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if !clientSpace(pk) || pk.PacketID == 0 { // 0: invalid, mochi refuses it
		return pk, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pairs(cl.ID)
	if in, ok := p.internal[pk.PacketID]; ok { // a QoS 2 PUBREL or a resent PUBLISH
		pk.PacketID = in
		return pk, nil
	}
	in, free := p.lastOut+1<<15, false
	for range 1 << 16 {
		if in == 0 {
			in = 1
		}
		_, mine := p.client[in]
		_, theirs := cl.State.Inflight.Get(in)
		if free = !mine && !theirs; free {
			break
		}
		in++
	}
	if !free { // every id in use: leave it to mochi, which refuses it
		return pk, nil
	}
	p.internal[pk.PacketID], p.client[in] = in, pk.PacketID
	pk.PacketID = in
	return pk, nil
}

func (h *packetIDs) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	t := pk.FixedHeader.Type
	switch {
	case t == packets.Publish && pk.FixedHeader.Qos > 0:
		h.mu.Lock()
		h.pairs(cl.ID).lastOut = pk.PacketID
		h.mu.Unlock()
	case t == packets.Puback || t == packets.Pubrec || t == packets.Pubcomp || t == packets.Suback || t == packets.Unsuback:
		h.mu.Lock()
		p := h.pairs(cl.ID)
		if id, ok := p.client[pk.PacketID]; ok {
			if t != packets.Pubrec { // the exchange is over
				delete(p.client, pk.PacketID)
				delete(p.internal, id)
			}
			pk.PacketID = id
		}
		h.mu.Unlock()
	}
	return pk
}

// OnSessionEstablished forgets a previous session's pairs when the client
// starts clean.
func (h *packetIDs) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	if pk.Connect.Clean {
		h.mu.Lock()
		delete(h.clients, cl.ID)
		h.mu.Unlock()
	}
}

// OnDisconnect forgets the pairs when the session ends with the connection.
func (h *packetIDs) OnDisconnect(cl *mochi.Client, _ error, expire bool) {
	if expire {
		h.mu.Lock()
		delete(h.clients, cl.ID)
		h.mu.Unlock()
	}
}

// pairs returns the session's pairs, made on first use; h.mu held.
func (h *packetIDs) pairs(id string) *idPairs {
	p := h.clients[id]
	if p == nil {
		p = &idPairs{internal: map[uint16]uint16{}, client: map[uint16]uint16{}}
		h.clients[id] = p
	}
	return p
}
