package metrics_test

import (
	"math"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edge-agent/edge-agent/agent/metrics"
	"github.com/edge-agent/edge-agent/power"
)

// scrape serves p's /metrics once and parses it with Prometheus's own
// text parser.
func scrape(t *testing.T, p *metrics.Prom) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return families
}

// value is the one sample of a gauge or counter family whose labels
// include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("/metrics lacks %s", name)
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("%s has no sample labelled %v", name, want)
	return 0
}

// The exporter shows what its options say at each scrape (not what they
// said when it was made), and what it was told about requests, wakes and
// calibrations.
func TestPromReadsItsOptionsAtEachScrape(t *testing.T) {
	capacity, temp := 64, 51.5
	pool := metrics.PoolStats{Loads: 7, Evictions: 3, BytesInUse: 1 << 20, Budget: 8 << 20, WarmModels: 2}
	st := power.State{OnAC: false, Battery: &power.Supply{Capacity: &capacity}, MaxTempC: &temp}
	outbox, connected := 5, true
	p := metrics.NewProm(metrics.PromOptions{
		Pool:  func() metrics.PoolStats { return pool },
		Power: func() power.State { return st },
		Startup: func() metrics.StartupStages {
			return metrics.StartupStages{StateOpen: 10 * time.Millisecond, BrokerConnect: 20 * time.Millisecond,
				Restore: 30 * time.Millisecond, Prewarm: 40 * time.Millisecond, Total: 2 * time.Second}
		},
		Outbox:    func() int { return outbox },
		Connected: func() bool { return connected },
	})
	p.Observe("m", false, "http", 20*time.Millisecond, 5*time.Millisecond)
	p.Observe("m", true, "mqtt", 2*time.Millisecond, time.Millisecond)
	p.Wake("resume")
	p.Calibrated("m", 1500*time.Millisecond)

	fams := scrape(t, p)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"edge_agent_loads_total", nil, 7},
		{"edge_agent_evictions_total", nil, 3},
		{"edge_agent_pool_bytes", nil, 1 << 20},
		{"edge_agent_pool_budget_bytes", nil, 8 << 20},
		{"edge_agent_warm_models", nil, 2},
		{"edge_agent_startup_stage_seconds", map[string]string{"stage": "state_open"}, 0.01},
		{"edge_agent_startup_stage_seconds", map[string]string{"stage": "broker_connect"}, 0.02},
		{"edge_agent_startup_stage_seconds", map[string]string{"stage": "restore"}, 0.03},
		{"edge_agent_startup_stage_seconds", map[string]string{"stage": "prewarm"}, 0.04},
		{"edge_agent_startup_stage_seconds", map[string]string{"stage": "total"}, 2},
		{"edge_agent_power_on_ac", nil, 0},
		{"edge_agent_battery_percent", nil, 64},
		{"edge_agent_temperature_max_celsius", nil, 51.5},
		{"edge_agent_outbox_messages", nil, 5},
		{"edge_agent_mqtt_connected", nil, 1},
		{"edge_agent_request_duration_seconds", map[string]string{"model": "m", "warm": "false", "transport": "http"}, 1},
		{"edge_agent_request_duration_seconds", map[string]string{"model": "m", "warm": "true", "transport": "mqtt"}, 1},
		{"edge_agent_invoke_duration_seconds", map[string]string{"model": "m", "transport": "http"}, 1},
		{"edge_agent_cold_starts_total", map[string]string{"model": "m"}, 1},
		{"edge_agent_wakes_total", map[string]string{"source": "resume"}, 1},
		{"edge_agent_calibration_seconds_total", map[string]string{"model": "m"}, 1.5},
	} {
		if got := value(t, fams, c.name, c.labels); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	pool.Loads, outbox, connected = 8, 0, false
	st = power.State{OnAC: true}
	fams = scrape(t, p)
	for _, c := range []struct {
		name string
		want float64
	}{
		{"edge_agent_loads_total", 8}, {"edge_agent_outbox_messages", 0}, {"edge_agent_mqtt_connected", 0},
		{"edge_agent_power_on_ac", 1}, {"edge_agent_battery_percent", -1},
	} {
		if got := value(t, fams, c.name, nil); got != c.want {
			t.Errorf("second scrape: %s = %v, want %v", c.name, got, c.want)
		}
	}
	if got := value(t, fams, "edge_agent_temperature_max_celsius", nil); !math.IsNaN(got) {
		t.Errorf("no thermal zone: temperature %v, want NaN", got)
	}
}

// With the exporter off (a nil *Prom) the request path, the planner and
// the calibrator still call it: it records nothing and does not panic.
func TestNilPromRecordsNothing(t *testing.T) {
	var p *metrics.Prom
	p.Observe("m", false, "mqtt", time.Millisecond, time.Millisecond)
	p.Wake("start")
	p.Calibrated("m", time.Second)
}
