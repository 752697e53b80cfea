package fleet

import (
	"errors"
	"fmt"
	"sync"

	"github.com/edge-agent/edge-agent/storage"
)

// View holds the best record seen per topic, as the broker delivers them
// (the retained ones on subscribing, then every new one). It is safe for
// concurrent use: MQTT writes it while the calibrator reads.
type View struct {
	prefix string
	max    int

	mu      sync.Mutex
	records map[string]Record
	refuted map[string]Record // per topic, the record this device's measurement contradicted
	changed chan struct{}     // closed and replaced on every change
}

// NewView keeps at most max records under prefix.
func NewView(prefix string, max int) *View {
	return &View{prefix: prefix, max: max, records: map[string]Record{}, refuted: map[string]Record{}, changed: make(chan struct{})}
}

// ErrFull is a record dropped because the view holds max already.
var ErrFull = errors.New("fleet view full")

// Offer takes a message from topic. An empty payload (a cleared record)
// forgets the topic. A record that does not decode, claims a key other
// than its topic's or more samples than a calibration takes is refused; a
// record losing to the one held (fewer samples, or as many and older) is
// ignored, and so is one this device refuted.
func (v *View) Offer(topic string, payload []byte) error {
	if len(payload) == 0 {
		v.mu.Lock()
		delete(v.records, topic)
		v.mu.Unlock()
		return nil
	}
	r, err := Decode(payload)
	if err != nil {
		return err
	}
	if t := Topic(v.prefix, r.Validity); t != topic {
		return fmt.Errorf("fleet record on %s claims the key of %s", topic, t)
	}
	if r.Samples < 1 || r.Samples > MaxSamples {
		return fmt.Errorf("fleet record on %s: samples %d not in 1..%d", topic, r.Samples, MaxSamples)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	old, ok := v.records[topic]
	switch {
	case !ok && len(v.records) >= v.max:
		return ErrFull
	case ok && !Better(r, old):
		return nil
	}
	if ref, ok := v.refuted[topic]; ok && same(r, ref) {
		return nil
	}
	v.records[topic] = r
	close(v.changed)
	v.changed = make(chan struct{})
	return nil
}

// Refute drops r, which this device's own measurement contradicts
// (Record.Contradicts), and keeps it out: the next record for its key is
// taken whatever its sample count (this device's own, published over it).
// Re-checking held records against what is measured here is what lets
// one wrong record with many samples be replaced.
func (v *View) Refute(r Record) {
	topic := Topic(v.prefix, r.Validity)
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.refuted[topic]; ok || len(v.refuted) < v.max {
		v.refuted[topic] = r // bounded as the records are
	}
	if held, ok := v.records[topic]; ok && same(held, r) {
		delete(v.records, topic)
		close(v.changed)
		v.changed = make(chan struct{})
	}
}

// same says a and b are the same publication: one device's record of one
// moment.
func same(a, b Record) bool {
	return a.Device == b.Device && a.At.Equal(b.At) && a.Samples == b.Samples && a.Validity == b.Validity
}

// Get is the record held for key k.
func (v *View) Get(k storage.Validity) (Record, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r, ok := v.records[Topic(v.prefix, k)]
	return r, ok
}

// Changed is closed at the next change: a waiter selects on it.
func (v *View) Changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed
}

// Topic is where the record for k lives under the view's prefix.
func (v *View) Topic(k storage.Validity) string { return Topic(v.prefix, k) }
