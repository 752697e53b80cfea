package mqtt

// mochi-mqtt (v2.7.9) acknowledges a QoS > 0 PUBLISH before it hands the
// message to the subscribers, and stores a retained one before both. A
// client that subscribes after the publisher has its PUBACK (its
// subscription causally after the publish) can therefore land between the
// two: it is sent the message as retained on subscribing and then, when
// the fan-out reaches it, again as a live message. A broker that fans out
// before it acknowledges (mosquitto) never sends that second copy.
//
// publishOrder fixes that from outside, as a hook: a SUBSCRIBE first waits
// until every publish in flight when it arrived has been handed to the
// subscribers. A publish that arrives while a subscribe is being served is
// concurrent with it, and either order is right for it. A publish counts
// as finished at OnPublished, or, where mochi returns early (the
// acknowledgement could not be written), at the client's next packet or
// disconnect. The wait is bounded, so a client stuck in a write cannot
// hold every subscriber up; a subscribe that stops waiting says so in the
// log.

import (
	"log/slog"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// publishWait bounds how long a SUBSCRIBE waits for publishes in flight.
const publishWait = 2 * time.Second

type publishOrder struct {
	mochi.HookBase
	log *slog.Logger

	mu       sync.Mutex
	inFlight map[*mochi.Client]uint64 // the client's publish being served, by number
	next     uint64
	finished chan struct{} // closed and replaced whenever a publish finishes
}

func newPublishOrder(log *slog.Logger) *publishOrder {
	return &publishOrder{log: log, inFlight: map[*mochi.Client]uint64{}, finished: make(chan struct{})}
}

func (h *publishOrder) ID() string { return "publish-order" }

func (h *publishOrder) Provides(b byte) bool {
	switch b {
	case mochi.OnPublish, mochi.OnPublished, mochi.OnPacketRead, mochi.OnDisconnect, mochi.OnSubscribe:
		return true
	}
	return false
}

func (h *publishOrder) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	h.mu.Lock()
	h.next++
	h.inFlight[cl] = h.next
	h.mu.Unlock()
	return pk, nil
}

func (h *publishOrder) OnPublished(cl *mochi.Client, _ packets.Packet) { h.finish(cl) }

// OnPacketRead: a client's packets are served one at a time, so its next
// packet means its last publish is over, whichever way it ended.
func (h *publishOrder) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	h.finish(cl)
	return pk, nil
}

func (h *publishOrder) OnDisconnect(cl *mochi.Client, _ error, _ bool) { h.finish(cl) }

func (h *publishOrder) finish(cl *mochi.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.inFlight[cl]; !ok {
		return
	}
	delete(h.inFlight, cl)
	close(h.finished)
	h.finished = make(chan struct{})
}

// OnSubscribe runs before mochi adds the subscription and reads the
// retained messages for it.
func (h *publishOrder) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	h.mu.Lock()
	waitFor := make(map[*mochi.Client]uint64, len(h.inFlight))
	for c, n := range h.inFlight {
		if c != cl {
			waitFor[c] = n
		}
	}
	deadline := time.NewTimer(publishWait)
	defer deadline.Stop()
	for h.anyStill(waitFor) {
		ch := h.finished
		h.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			h.log.Warn("a subscribe stopped waiting for publishes in flight: it may see a message both as retained and live",
				"client", cl.ID, "publishes", len(waitFor), "waited", publishWait)
			return pk
		}
		h.mu.Lock()
	}
	h.mu.Unlock()
	return pk
}

// anyStill reports whether one of the publishes in waitFor is still being
// served; mu held.
func (h *publishOrder) anyStill(waitFor map[*mochi.Client]uint64) bool {
	for c, n := range waitFor {
		if h.inFlight[c] == n {
			return true
		}
		delete(waitFor, c)
	}
	return false
}
