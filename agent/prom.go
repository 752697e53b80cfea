package agent

// Prometheus: [http] listen serves /metrics (prometheus/client_golang):
// request latency histograms by model and warm, cold starts, loads and
// evictions, pool bytes and budget, calibration time, startup stages,
// power, wakes, the outbox and the MQTT connection, plus the Go and
// process collectors (process_resident_memory_bytes is the RSS).

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type promMetrics struct {
	reg         *prometheus.Registry
	request     *prometheus.HistogramVec
	invoke      *prometheus.HistogramVec
	coldStarts  *prometheus.CounterVec
	calibration *prometheus.CounterVec
	wakes       *prometheus.CounterVec
}

// latencyBuckets: 0.5 ms to 10 s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 15)

func newPromMetrics(a *Agent) *promMetrics {
	p := &promMetrics{reg: prometheus.NewRegistry(),
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
	stage := func(name string, f func(StartupTimings) time.Duration) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edge_agent_startup_stage_seconds",
			Help: "The last start's stages.", ConstLabels: prometheus.Labels{"stage": name}},
			func() float64 { return f(a.report.Timings).Seconds() }) // written before HTTP starts
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	p.reg.MustRegister(p.request, p.invoke, p.coldStarts, p.calibration, p.wakes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		counter("edge_agent_loads_total", "Interpreters warmed (requests and prewarms).", func() float64 { return float64(a.pool.Stats().Loads) }),
		counter("edge_agent_evictions_total", "Models evicted (budget, memory pressure, keep-alive, requests).", func() float64 { return float64(a.pool.Stats().Evictions) }),
		gauge("edge_agent_pool_bytes", "Bytes the warm models hold (accounted).", func() float64 { return float64(a.pool.Stats().BytesInUse) }),
		gauge("edge_agent_pool_budget_bytes", "The pool's budget; 0 is none.", func() float64 { return float64(a.pool.Stats().Budget) }),
		gauge("edge_agent_warm_models", "Models with an interpreter warm.", func() float64 { return float64(a.pool.Stats().WarmModels) }),
		stage("state_open", func(t StartupTimings) time.Duration { return t.StateOpen }),
		stage("broker_connect", func(t StartupTimings) time.Duration { return t.BrokerConnect }),
		stage("restore", func(t StartupTimings) time.Duration { return t.Restore }),
		stage("prewarm", func(t StartupTimings) time.Duration { return t.Prewarm }),
		stage("total", func(t StartupTimings) time.Duration { return t.Total }),
		gauge("edge_agent_power_on_ac", "1 on external power.", func() float64 { return b2f(a.powerReader().Read().OnAC) }),
		gauge("edge_agent_battery_percent", "The main battery's charge; -1 without one.", func() float64 {
			if b := a.powerReader().Read().Battery; b != nil && b.Capacity != nil {
				return float64(*b.Capacity)
			}
			return -1
		}),
		gauge("edge_agent_temperature_max_celsius", "The hottest thermal zone; NaN without one.", func() float64 {
			if t := a.powerReader().Read().MaxTempC; t != nil {
				return *t
			}
			return math.NaN()
		}),
		gauge("edge_agent_outbox_messages", "Telemetry waiting for the broker.", func() float64 {
			s, _ := a.store.OutboxStats()
			return float64(s.Count)
		}),
		gauge("edge_agent_mqtt_connected", "1 while connected to the broker.", func() float64 { return b2f(a.mq != nil && a.mq.Stats().Connected) }),
	)
	return p
}

func (p *promMetrics) observe(model string, warm bool, transport string, e2e, invoke time.Duration) {
	w := "false"
	if warm {
		w = "true"
	} else {
		p.coldStarts.WithLabelValues(model).Inc()
	}
	p.request.WithLabelValues(model, w, transport).Observe(e2e.Seconds())
	p.invoke.WithLabelValues(model, transport).Observe(invoke.Seconds())
}
