package metrics

import (
	"math"
	"sync"
	"time"
)

// Request latencies per model, as the MQTT metrics and status report them:
// end to end (from the command's arrival: queue, preprocess, load if cold,
// invoke) and the invoke alone, since start and over the metrics interval,
// with warm and cold counts and the first request after each wake.

// Latencies is the agent's record; safe for concurrent use.
type Latencies struct {
	mu          sync.Mutex
	started     time.Time
	models      map[string]*modelLatency
	latestFirst time.Duration // the latest first request after a wake, any model
}

type modelLatency struct {
	requests, warm, cold uint64
	e2e, invoke          logHist // since start
	ivRequests           uint64
	ivE2E, ivInvoke      logHist // since the last metrics message
	// ivVersions splits the interval by the version that answered (an
	// update's interval: the old version's last requests apart from the
	// new one's first).
	ivVersions     map[string]*versionInterval
	firstAfterWake time.Duration
}

// NewLatencies starts an empty record; started is when the process
// started (cold starts per hour count from there).
func NewLatencies(started time.Time) *Latencies {
	return &Latencies{started: started, models: map[string]*modelLatency{}}
}

// versionInterval is one version's part of a model's interval.
type versionInterval struct {
	requests    uint64
	e2e, invoke logHist
}

// Observe records one answered request: the model and version that
// answered, whether it was warm and the first after a wake, its time end
// to end and its invoke's.
func (l *Latencies) Observe(model, version string, warm, firstAfterWake bool, e2e, invoke time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.models[model]
	if m == nil {
		m = &modelLatency{}
		l.models[model] = m
	}
	m.requests++
	m.ivRequests++
	if warm {
		m.warm++
	} else {
		m.cold++
	}
	m.e2e.add(e2e)
	m.invoke.add(invoke)
	m.ivE2E.add(e2e)
	m.ivInvoke.add(invoke)
	if version != "" {
		if m.ivVersions == nil {
			m.ivVersions = map[string]*versionInterval{}
		}
		v := m.ivVersions[version]
		if v == nil {
			v = &versionInterval{}
			m.ivVersions[version] = v
		}
		v.requests++
		v.e2e.add(e2e)
		v.invoke.add(invoke)
	}
	if firstAfterWake {
		m.firstAfterWake, l.latestFirst = e2e, e2e
	}
}

// LastFirst is the latest first-request-after-a-wake latency.
func (l *Latencies) LastFirst() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.latestFirst
}

// LatencyReport is one model's latencies.
type LatencyReport struct {
	Requests         uint64      `json:"requests"`
	Warm             uint64      `json:"warm"`
	Cold             uint64      `json:"cold"`
	ColdPerHour      float64     `json:"cold_starts_per_hour"`
	E2EMs            Percentiles `json:"e2e_ms"`    // since start
	InvokeMs         Percentiles `json:"invoke_ms"` // since start
	Interval         *Interval   `json:"interval,omitempty"`
	FirstAfterWakeMs float64     `json:"first_after_wake_ms,omitempty"` // the latest wake's first request
}

// Interval is the same over the metrics interval.
type Interval struct {
	Requests uint64      `json:"requests"`
	E2EMs    Percentiles `json:"e2e_ms"`
	InvokeMs Percentiles `json:"invoke_ms"`
	// ByVersion splits an interval in which more than one version answered
	// (an update), by sha256.
	ByVersion map[string]Interval `json:"by_version,omitempty"`
}

// Percentiles in ms (bucket estimates: within 10 % of the true value).
type Percentiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// Snapshot reports every model; with interval it reports the interval too
// and starts the next one.
func (l *Latencies) Snapshot(now time.Time, interval bool) map[string]LatencyReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	hours := max(now.Sub(l.started).Hours(), 1e-9)
	out := make(map[string]LatencyReport, len(l.models))
	for id, m := range l.models {
		r := LatencyReport{Requests: m.requests, Warm: m.warm, Cold: m.cold, ColdPerHour: float64(m.cold) / hours,
			E2EMs: m.e2e.percentiles(), InvokeMs: m.invoke.percentiles(), FirstAfterWakeMs: ms(m.firstAfterWake)}
		if interval {
			r.Interval = &Interval{Requests: m.ivRequests, E2EMs: m.ivE2E.percentiles(), InvokeMs: m.ivInvoke.percentiles()}
			if len(m.ivVersions) > 1 {
				r.Interval.ByVersion = make(map[string]Interval, len(m.ivVersions))
				for d, v := range m.ivVersions {
					r.Interval.ByVersion[d] = Interval{Requests: v.requests, E2EMs: v.e2e.percentiles(), InvokeMs: v.invoke.percentiles()}
				}
			}
			m.ivRequests, m.ivE2E, m.ivInvoke, m.ivVersions = 0, logHist{}, logHist{}, nil
		}
		out[id] = r
	}
	return out
}

// logHist counts durations in buckets a factor 2^(1/8) apart (9 % wide)
// from 10 µs to about 20 minutes: percentiles in constant memory.
type logHist struct {
	bins [histBins]uint32
	n    uint64
}

const (
	histBins  = 216
	histFirst = 10 * time.Microsecond
	histStep  = 8 // buckets per doubling
)

func (h *logHist) add(d time.Duration) {
	i := 0
	if d > histFirst {
		i = min(1+int(histStep*math.Log2(float64(d)/float64(histFirst))), histBins-1)
	}
	h.bins[i]++
	h.n++
}

// quantile is the geometric middle of the bucket holding quantile q.
func (h *logHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	want := max(1, uint64(math.Ceil(q*float64(h.n))))
	var seen uint64
	for i, c := range h.bins {
		if seen += uint64(c); seen >= want {
			if i == 0 {
				return histFirst
			}
			return time.Duration(float64(histFirst) * math.Exp2((float64(i)-0.5)/histStep))
		}
	}
	return 0
}

func (h *logHist) percentiles() Percentiles {
	return Percentiles{P50: ms(h.quantile(.5)), P95: ms(h.quantile(.95)), P99: ms(h.quantile(.99))}
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
