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
	"sync/atomic"
	"time"

	"github.com/edge-agent/edge-agent/agent/metrics"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
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

// telemetry is what the agent tells about itself: events and the startup
// report, queued in the state's outbox for MQTT; the periodic metrics
// message; the usage the planner learns demand from; request latencies
// and the Prometheus exporter. Its event writer runs under the agent's
// runCtx (startLoops) and Close drains what is left. Its own locks (the
// usage batch's, the latencies') are leaves: nothing is called under
// them. It takes none of the registry's locks; its deps take only
// the pool's, the tiers' and the state's, never under one of its own.
type telemetry struct {
	d telemetryDeps
	// later are events raised on hot paths, waiting for eventWriter.
	later chan queuedEvent
	// report is what the start found and did. Start writes it before it
	// spawns anything that reads it (Report, the exporter's stage gauges,
	// the board's fingerprint and hardware in keys, the fleet's filter and
	// Home Assistant) and never after: it needs no lock.
	report StartupReport
	// mq is the MQTT client (nil without brokers); Start sets it before
	// the goroutines that read it start.
	mq    *mqtt.Client
	usage usageBatch
	// lat records request latencies; prom exports metrics to Prometheus
	// ([http] listen; nil when off).
	lat  *metrics.Latencies
	prom *metrics.Prom
	// startups are the last starts' durations (ms), from the state file.
	startups atomic.Pointer[[]float64]
	// startPublished is closed once the report at READY is queued: the
	// final one goes after it.
	startPublished chan struct{}
}

// telemetryDeps is what the telemetry asks of the agent. store and pool
// are functions: both exist only once the agent has started (and the
// store no longer after Close).
type telemetryDeps struct {
	log     *slog.Logger
	store   func() *storage.Store
	pool    func() *tflite.Pool
	started time.Time // when the process started
	// memory and tiers are the metrics message's memory report and the
	// families' fast-path agreement.
	memory func() MemoryReport
	tiers  func() map[string]TierStats
	// power is the device's power state (the exporter's gauges).
	power func() power.State
	// exporter turns the Prometheus exporter on.
	exporter bool
	// beforeWrite, when set, runs before an event is written (tests hold
	// a write there, as a slow fsync would).
	beforeWrite func(kind string)
}

func newTelemetry(d telemetryDeps) *telemetry {
	t := &telemetry{d: d, later: make(chan queuedEvent, 256), lat: metrics.NewLatencies(d.started)}
	if d.exporter {
		t.prom = metrics.NewProm(metrics.PromOptions{Pool: t.poolStats, Power: d.power, Startup: t.startupStages,
			Outbox: t.outboxCount, Connected: t.connected})
	}
	return t
}

// poolStats, startupStages, outboxCount and connected are what the
// exporter reads at each scrape.
func (t *telemetry) poolStats() metrics.PoolStats {
	s := t.d.pool().Stats()
	return metrics.PoolStats{Loads: s.Loads, Evictions: s.Evictions, BytesInUse: s.BytesInUse, Budget: s.Budget, WarmModels: s.WarmModels}
}

func (t *telemetry) startupStages() metrics.StartupStages {
	r := t.report.Timings // written before HTTP starts
	return metrics.StartupStages{StateOpen: r.StateOpen, BrokerConnect: r.BrokerConnect, Restore: r.Restore, Prewarm: r.Prewarm, Total: r.Total}
}

func (t *telemetry) outboxCount() int {
	s, _ := t.d.store().OutboxStats()
	return s.Count
}

func (t *telemetry) connected() bool { return t.mq != nil && t.mq.Stats().Connected }

// publish queues v (a JSON object) on topic with the schema version and its
// outbox sequence number, then wakes the MQTT client.
func (t *telemetry) publish(topic string, retain bool, v any) error {
	_, dropped, err := t.d.store().AppendFunc(topic, retain, func(seq uint64) ([]byte, error) {
		return withSeq(v, seq)
	})
	if err != nil {
		return err
	}
	if dropped > 0 {
		t.d.log.Warn("outbox full: oldest telemetry dropped", "dropped", dropped)
	}
	if t.mq != nil {
		t.mq.Notify()
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
func (a *Agent) Event(kind string, fields map[string]any) error { return a.tel.emit(kind, fields) }

// emit queues a telemetry event on telemetry/events.
func (t *telemetry) emit(kind string, fields map[string]any) error {
	m := map[string]any{"event": kind, "at": time.Now().UTC().Format(time.RFC3339Nano)}
	for k, v := range fields {
		m[k] = v
	}
	return t.publish(topicEvents, false, m)
}

// event is emit for the agent's own use: a failure is logged, not fatal.
func (t *telemetry) event(kind string, fields map[string]any) {
	t.d.log.Info("event", append([]any{"kind", kind}, flatten(fields)...)...)
	if t.d.store() == nil {
		return
	}
	if t.d.beforeWrite != nil {
		t.d.beforeWrite(kind)
	}
	if err := t.emit(kind, fields); err != nil {
		t.d.log.Error("event not queued", "kind", kind, "err", err)
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
func (t *telemetry) eventLater(kind string, fields map[string]any) {
	fields["at"] = time.Now().UTC().Format(time.RFC3339Nano) // when it happened, not when written
	select {
	case t.later <- queuedEvent{kind: kind, fields: fields}:
	default:
		t.event(kind, fields)
	}
}

// eventWriter writes queued events until ctx ends, then what is left.
func (t *telemetry) eventWriter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			t.drainEvents()
			return
		case e := <-t.later:
			t.event(e.kind, e.fields)
		}
	}
}

// drainEvents writes the queued events now.
func (t *telemetry) drainEvents() {
	for {
		select {
		case e := <-t.later:
			t.event(e.kind, e.fields)
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
	Latency map[string]metrics.LatencyReport `json:"latency"`
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

// metrics is the metrics message; interval reports (and restarts) the
// per-interval latencies: only the periodic message does.
func (t *telemetry) metrics(interval bool) Metrics {
	m := Metrics{At: time.Now().UTC().Format(time.RFC3339Nano), UptimeS: time.Since(t.d.started).Seconds(),
		Pool: t.d.pool().Stats(), Process: processStats(), Memory: t.d.memory(), UsageSaved: t.usage.pending(),
		Latency: t.lat.Snapshot(time.Now(), interval)}
	if st := t.startups.Load(); st != nil {
		m.Startups = *st
	}
	m.Outbox, _ = t.d.store().OutboxStats()
	if tiers := t.d.tiers(); len(tiers) > 0 {
		m.Tiers = tiers
	}
	if t.mq != nil {
		s := t.mq.Stats()
		m.MQTT = &s
	}
	return m
}

// recordStart keeps this start's duration with the last ones (a state
// write and its fsync: run after READY, not on the start's path).
func (t *telemetry) recordStart(total time.Duration) {
	kept, err := t.d.store().RecordStart(total)
	if err != nil {
		t.d.log.Warn("start duration not stored", "err", err)
		return
	}
	starts := make([]float64, len(kept))
	for i, d := range kept {
		starts[i] = ms(d)
	}
	t.startups.Store(&starts) // commands may read it meanwhile
}

// bootID identifies this boot of the machine.
func bootID(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "proc/sys/kernel/random/boot_id"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
