package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v3/process"

	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/storage"
)

// Outbox topics, below <prefix>/<device>/.
const (
	topicStartup = "telemetry/startup"
	topicEvents  = "telemetry/events"
	topicMetrics = "metrics"
)

// outbox adapts the state's outbox to the MQTT client's interface.
type outbox struct{ s *storage.Store }

func (o outbox) Pending(after uint64, limit int) ([]mqtt.Message, error) {
	msgs, err := o.s.Pending(after, limit)
	out := make([]mqtt.Message, len(msgs))
	for i, m := range msgs {
		out[i] = mqtt.Message{Seq: m.Seq, Topic: m.Topic, Payload: m.Payload, Retain: m.Retain}
	}
	return out, err
}

func (o outbox) Ack(seqs ...uint64) error { return o.s.Ack(seqs...) }

// publish queues v (a JSON object) on topic with the schema version and its
// outbox sequence number, then wakes the MQTT client.
func (a *Agent) publish(topic string, retain bool, v any) error {
	_, dropped, err := a.store.AppendFunc(topic, retain, func(seq uint64) ([]byte, error) {
		return withSeq(v, seq)
	})
	if err != nil {
		return err
	}
	if dropped > 0 {
		a.log.Warn("outbox full: oldest telemetry dropped", "dropped", dropped)
	}
	if a.mq != nil {
		a.mq.Notify()
	}
	return nil
}

// withSeq marshals v and adds "schema" and "seq" to the object.
func withSeq(v any, seq uint64) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m["schema"] = json.RawMessage(`1`)
	m["seq"], _ = json.Marshal(seq)
	return json.Marshal(m)
}

// Event queues a telemetry event on telemetry/events.
func (a *Agent) Event(kind string, fields map[string]any) error {
	m := map[string]any{"event": kind, "at": time.Now().UTC().Format(time.RFC3339Nano)}
	for k, v := range fields {
		m[k] = v
	}
	return a.publish(topicEvents, false, m)
}

// event is Event for the agent's own use: a failure is logged, not fatal.
func (a *Agent) event(kind string, fields map[string]any) {
	a.log.Info("event", append([]any{"kind", kind}, flatten(fields)...)...)
	if a.store == nil {
		return
	}
	if err := a.Event(kind, fields); err != nil {
		a.log.Error("event not queued", "kind", kind, "err", err)
	}
}

// queuedEvent is an event raised on a hot path, waiting for the writer.
type queuedEvent struct {
	kind   string
	fields map[string]any
}

// eventLater hands an event raised on a request's goroutine (a pool
// eviction during Acquire) to the event writer, so the request never waits
// for the state file's fsync. When the writer is that far behind, the
// event is written here rather than lost.
func (a *Agent) eventLater(kind string, fields map[string]any) {
	fields["at"] = time.Now().UTC().Format(time.RFC3339Nano) // when it happened, not when written
	select {
	case a.laterEvents <- queuedEvent{kind: kind, fields: fields}:
	default:
		a.event(kind, fields)
	}
}

// eventWriter writes queued events until ctx ends, then what is left.
func (a *Agent) eventWriter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			a.drainEvents()
			return
		case e := <-a.laterEvents:
			a.event(e.kind, e.fields)
		}
	}
}

// drainEvents writes the queued events now.
func (a *Agent) drainEvents() {
	for {
		select {
		case e := <-a.laterEvents:
			a.event(e.kind, e.fields)
		default:
			return
		}
	}
}

// flatten turns event fields into log attributes in a stable order:
// scalars as they are, structs and maps as slog groups of their JSON
// fields (footprint.mapped=… footprint.heap=…), never Go struct dumps.
func flatten(m map[string]any) []any {
	keys := slices.Sorted(maps.Keys(m))
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		out = append(out, logAttr(k, m[k]))
	}
	return out
}

func logAttr(k string, v any) slog.Attr {
	switch v.(type) {
	case nil, string, bool, int, int64, uint64, float64, time.Duration, time.Time, error:
		return slog.Any(k, v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return slog.Any(k, v)
	}
	var j any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber() // integers stay integers
	if err := d.Decode(&j); err != nil {
		return slog.Any(k, v)
	}
	return jsonAttr(k, j)
}

// jsonAttr is a decoded JSON value as an attribute: objects become groups.
func jsonAttr(k string, j any) slog.Attr {
	obj, ok := j.(map[string]any)
	if !ok {
		return slog.Any(k, j)
	}
	attrs := make([]any, 0, len(obj))
	for _, kk := range slices.Sorted(maps.Keys(obj)) {
		attrs = append(attrs, jsonAttr(kk, obj[kk]))
	}
	return slog.Group(k, attrs...)
}

// Metrics is the periodic metrics message.
type Metrics struct {
	At      string       `json:"at"`
	UptimeS float64      `json:"uptime_s"`
	Pool    any          `json:"pool"`
	Process ProcessStats `json:"process"`
	Memory  MemoryReport `json:"memory"` // RSS, baseline and accounted side by side
	// Latency per model: requests, warm and cold, p50/p95/p99 end to end
	// and of the invoke (since start, and over the interval).
	Latency map[string]LatencyReport `json:"latency"`
	// Startups are the last starts' durations (process start → ready), ms,
	// oldest first.
	Startups   []float64           `json:"startups_ms,omitempty"`
	Outbox     storage.OutboxStats `json:"outbox"`
	MQTT       *mqtt.Stats         `json:"mqtt,omitempty"`
	UsageSaved int                 `json:"usage_events_pending"`
	// Tiers is each family's fast-path agreement with its precise variant.
	Tiers map[string]TierStats `json:"tiers,omitempty"`
}

// ProcessStats is the agent process's memory and CPU.
type ProcessStats struct {
	RSSBytes   uint64  `json:"rss_bytes"`
	CPUSeconds float64 `json:"cpu_seconds"` // user + system since start
}

func processStats() ProcessStats {
	p, err := process.NewProcess(int32(os.Getpid()))
	if err != nil {
		return ProcessStats{}
	}
	var ps ProcessStats
	if mi, err := p.MemoryInfo(); err == nil {
		ps.RSSBytes = mi.RSS
	}
	if t, err := p.Times(); err == nil {
		ps.CPUSeconds = t.User + t.System
	}
	return ps
}

// metrics is the metrics message; interval reports (and restarts) the
// per-interval latencies: only the periodic message does.
func (a *Agent) metrics(interval bool) Metrics {
	m := Metrics{At: time.Now().UTC().Format(time.RFC3339Nano), UptimeS: time.Since(a.opts.Started).Seconds(),
		Pool: a.pool.Stats(), Process: processStats(), Memory: a.mem.report(), UsageSaved: a.usage.pending(),
		Latency: a.lat.snapshot(time.Now(), interval)}
	if st := a.startups.Load(); st != nil {
		m.Startups = *st
	}
	m.Outbox, _ = a.store.OutboxStats()
	if t := a.tiers.snapshot(); len(t) > 0 {
		m.Tiers = t
	}
	if a.mq != nil {
		s := a.mq.Stats()
		m.MQTT = &s
	}
	return m
}

// usageBatch collects requests in memory; they are written to the state
// in one transaction a minute (and at shutdown), not one per request.
// Requests to one model within one hour are one event (the history is
// per hour), so the batch stays small while the state cannot be written:
// models × hours of the outage, and at most maxPendingUsage events.
type usageBatch struct {
	// mu guards events, index and dropped.
	mu      sync.Mutex
	events  []storage.UsageEvent
	index   map[usageKey]int // into events
	dropped int
}

type usageKey struct {
	model string
	hour  int64
}

// maxPendingUsage bounds the batch; past it the oldest hours are dropped.
const maxPendingUsage = 4096

func (u *usageBatch) record(model string, at time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.addLocked(model, at, 1)
}

func (u *usageBatch) addLocked(model string, at time.Time, n float64) {
	k := usageKey{model, at.Unix() / 3600}
	if i, ok := u.index[k]; ok {
		u.events[i].N += n
		return
	}
	if len(u.events) >= maxPendingUsage {
		u.events = append(u.events[:0], u.events[1:]...)
		u.dropped++
		u.reindex()
	}
	if u.index == nil {
		u.index = map[usageKey]int{}
	}
	u.index[k] = len(u.events)
	u.events = append(u.events, storage.UsageEvent{Model: model, At: at, N: n})
}

func (u *usageBatch) reindex() {
	u.index = make(map[usageKey]int, len(u.events))
	for i, e := range u.events {
		u.index[usageKey{e.Model, e.At.Unix() / 3600}] = i
	}
}

func (u *usageBatch) pending() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.events)
}

func (u *usageBatch) flush(s *storage.Store) error {
	u.mu.Lock()
	ev := u.events
	u.events, u.index = nil, nil
	u.mu.Unlock()
	if err := s.AddUsage(ev); err != nil {
		u.mu.Lock()
		for _, e := range ev { // kept for the next try, merged again
			u.addLocked(e.Model, e.At, e.N)
		}
		u.mu.Unlock()
		return err
	}
	return nil
}

// bootID identifies this boot of the machine.
func bootID(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "proc/sys/kernel/random/boot_id"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
