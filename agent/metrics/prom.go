package metrics

// Prometheus: [http] listen serves /metrics (prometheus/client_golang):
// request latency histograms by model and warm, cold starts, loads and
// evictions, pool bytes and budget, calibration time, startup stages,
// power, wakes, the outbox and the MQTT connection, plus the Go and
// process collectors (process_resident_memory_bytes is the RSS).

import (
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edge-agent/edge-agent/power"
)

// PromOptions are what the exporter reads from the agent at each scrape.
// Every function is required; each is called once per gauge that shows
// it, with no lock of the exporter held.
type PromOptions struct {
	// Pool is the interpreter pool's counters (after the start).
	Pool func() PoolStats
	// Power is the device's power state.
	Power func() power.State
	// Startup is the last start's stages (complete before /metrics is
	// served).
	Startup func() StartupStages
	// Outbox is how many telemetry messages wait for the broker.
	Outbox func() int
	// Connected says whether the MQTT client is connected to a broker.
	Connected func() bool
}

// PoolStats are the pool's figures the exporter shows.
type PoolStats struct {
	Loads, Evictions   uint64
	BytesInUse, Budget int64 // Budget 0 is none
	WarmModels         int
}

// StartupStages are the last start's stages.
type StartupStages struct {
	StateOpen, BrokerConnect, Restore, Prewarm, Total time.Duration
}

// Prom is the Prometheus exporter. A nil *Prom (the exporter is off)
// records nothing.
type Prom struct {
	reg         *prometheus.Registry
	request     *prometheus.HistogramVec
	invoke      *prometheus.HistogramVec
	coldStarts  *prometheus.CounterVec
	calibration *prometheus.CounterVec
	wakes       *prometheus.CounterVec
}

// latencyBuckets: 0.5 ms to 10 s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 15)

// NewProm registers the agent's metrics, read from o at each scrape.
func NewProm(o PromOptions) *Prom {
	p := &Prom{reg: prometheus.NewRegistry(),
		request: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "edge_agent_request_duration_seconds",
			Help: "Inference requests, end to end: queue, preprocess, load when cold, invoke; transport is mqtt or http.", Buckets: latencyBuckets}, []string{"model", "warm", "transport"}),
		invoke: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "edge_agent_invoke_duration_seconds",
			Help: "The invoke alone of inference requests.", Buckets: latencyBuckets}, []string{"model", "transport"}),
		coldStarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edge_agent_cold_starts_total",
			Help: "Requests that found their model cold and loaded it."}, []string{"model"}),
		calibration: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edge_agent_calibration_seconds_total",
			Help: "Time spent calibrating models."}, []string{"model"}),
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edge_agent_wakes_total",
			Help: "Wakes handled (start, resume, schedule, signal, command)."}, []string{"source"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	stage := func(name string, f func(StartupStages) time.Duration) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edge_agent_startup_stage_seconds",
			Help: "The last start's stages.", ConstLabels: prometheus.Labels{"stage": name}},
			func() float64 { return f(o.Startup()).Seconds() })
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	p.reg.MustRegister(p.request, p.invoke, p.coldStarts, p.calibration, p.wakes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		counter("edge_agent_loads_total", "Interpreters warmed (requests and prewarms).", func() float64 { return float64(o.Pool().Loads) }),
		counter("edge_agent_evictions_total", "Models evicted (budget, memory pressure, keep-alive, requests).", func() float64 { return float64(o.Pool().Evictions) }),
		gauge("edge_agent_pool_bytes", "Bytes the warm models hold (accounted).", func() float64 { return float64(o.Pool().BytesInUse) }),
		gauge("edge_agent_pool_budget_bytes", "The pool's budget; 0 is none.", func() float64 { return float64(o.Pool().Budget) }),
		gauge("edge_agent_warm_models", "Models with an interpreter warm.", func() float64 { return float64(o.Pool().WarmModels) }),
		stage("state_open", func(t StartupStages) time.Duration { return t.StateOpen }),
		stage("broker_connect", func(t StartupStages) time.Duration { return t.BrokerConnect }),
		stage("restore", func(t StartupStages) time.Duration { return t.Restore }),
		stage("prewarm", func(t StartupStages) time.Duration { return t.Prewarm }),
		stage("total", func(t StartupStages) time.Duration { return t.Total }),
		gauge("edge_agent_power_on_ac", "1 on external power.", func() float64 { return b2f(o.Power().OnAC) }),
		gauge("edge_agent_battery_percent", "The main battery's charge; -1 without one.", func() float64 {
			if b := o.Power().Battery; b != nil && b.Capacity != nil {
				return float64(*b.Capacity)
			}
			return -1
		}),
		gauge("edge_agent_temperature_max_celsius", "The hottest thermal zone; NaN without one.", func() float64 {
			if t := o.Power().MaxTempC; t != nil {
				return *t
			}
			return math.NaN()
		}),
		gauge("edge_agent_outbox_messages", "Telemetry waiting for the broker.", func() float64 { return float64(o.Outbox()) }),
		gauge("edge_agent_mqtt_connected", "1 while connected to the broker.", func() float64 { return b2f(o.Connected()) }),
	)
	return p
}

// Handler serves the registry in Prometheus's text format.
func (p *Prom) Handler() http.Handler {
	return promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{Registry: p.reg})
}

// Observe records one answered request.
func (p *Prom) Observe(model string, warm bool, transport string, e2e, invoke time.Duration) {
	if p == nil {
		return
	}
	w := "false"
	if warm {
		w = "true"
	} else {
		p.coldStarts.WithLabelValues(model).Inc()
	}
	p.request.WithLabelValues(model, w, transport).Observe(e2e.Seconds())
	p.invoke.WithLabelValues(model, transport).Observe(invoke.Seconds())
}

// Wake counts a wake handled, by its source.
func (p *Prom) Wake(source string) {
	if p == nil {
		return
	}
	p.wakes.WithLabelValues(source).Inc()
}

// Calibrated adds the time one calibration of model took.
func (p *Prom) Calibrated(model string, took time.Duration) {
	if p == nil {
		return
	}
	p.calibration.WithLabelValues(model).Add(took.Seconds())
}
