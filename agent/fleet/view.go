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
	changed chan struct{} // closed and replaced on every change
}

// NewView keeps at most max records under prefix.
func NewView(prefix string, max int) *View {
	return &View{prefix: prefix, max: max, records: map[string]Record{}, changed: make(chan struct{})}
}

// ErrFull is a record dropped because the view holds max already.
var ErrFull = errors.New("fleet view full")

// Offer takes a message from topic. An empty payload (a cleared record)
// forgets the topic. A record that does not decode, or claims a key other
// than its topic's, is refused; a record losing to the one held (fewer
// samples, or as many and older) is ignored.
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
	v.mu.Lock()
	defer v.mu.Unlock()
	old, ok := v.records[topic]
	switch {
	case !ok && len(v.records) >= v.max:
		return ErrFull
	case ok && !Better(r, old):
		return nil
	}
	v.records[topic] = r
	close(v.changed)
	v.changed = make(chan struct{})
	return nil
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
