package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-agent/edge-agent/agent/calibrate"
	"github.com/edge-agent/edge-agent/agent/fleet"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// Fleet sharing: a device publishes what it measured about a model,
// retained, under the model × runtime × hardware × options key; a twin
// that knows nothing about the model looks the record up (briefly, in
// the background calibrator, never in a request's way) and serves with it
// at once, then checks it with one measuring load at low priority.

// FleetConfig is [fleet].
type FleetConfig struct {
	// Enabled shares calibrations with twins over the broker. It needs
	// [mqtt] brokers (the embedded local broker has no twins). Default true.
	Enabled bool `toml:"enabled"`
	// Publish this device's measurements; Subscribe to use the twins'.
	// Both default true.
	Publish   bool `toml:"publish"`
	Subscribe bool `toml:"subscribe"`
	// LookupWait is how long, after connecting, a model with nothing
	// known waits for its record before it is measured here. Default 1s.
	LookupWait time.Duration `toml:"lookup_wait"`
	// Tolerance: a record's steady latency agrees with this device's when
	// the ratio is within 1+tolerance either way (heap: within 25%).
	// Default 1 (a factor of 2: timings of one load are noisy).
	Tolerance float64 `toml:"tolerance"`
	// MaxRecords bounds the records held from the broker. Default 1024.
	MaxRecords int `toml:"max_records"`
	// Stagger spreads a fleet member's prewarm after a wake over a random
	// [0, stagger) (the larger of it and power.max_stagger), so twins
	// woken together do not load in lockstep. The pinned models at start
	// are never delayed. Default 1s.
	Stagger time.Duration `toml:"stagger"`
}

// fleetMember says the device shares with twins: fleet on and a broker
// configured (not only the local one).
func (c Config) fleetMember() bool { return c.Fleet.Enabled && len(c.MQTT.Brokers) > 0 }

// fleetState is the agent's side of sharing: the records seen and those
// waiting for a connection to be published.
type fleetState struct {
	view      *fleet.View
	connected atomic.Pointer[time.Time] // the first connection
	kick      chan struct{}

	mu      sync.Mutex
	pending map[string][]byte // topic → record to publish, retained
}

// fleetOptions subscribes to the twins' records and arms publishing.
func (a *Agent) fleetOptions(o *mqtt.Options) {
	cfg := a.config()
	if !cfg.fleetMember() {
		return
	}
	f := &fleetState{view: fleet.NewView(cfg.MQTT.Prefix, cfg.Fleet.MaxRecords), kick: make(chan struct{}, 1), pending: map[string][]byte{}}
	a.fleet = f
	if cfg.Fleet.Subscribe {
		o.Watch[fleet.Filter(cfg.MQTT.Prefix, a.tel.report.Fingerprint, a.opts.RuntimeVersion)] = func(topic string, p []byte) {
			switch err := f.view.Offer(topic, p); {
			case errors.Is(err, fleet.ErrUnknownSchema):
				a.log.Debug("fleet record of another version ignored", "topic", topic, "err", err)
			case err != nil:
				a.log.Warn("fleet record refused", "topic", topic, "err", err)
			}
		}
	}
	o.OnConnect = chain(o.OnConnect, func() {
		now := time.Now()
		f.connected.CompareAndSwap(nil, &now)
		select {
		case f.kick <- struct{}{}:
		default:
		}
	})
}

// fleetHint is the twins' record for key k, waiting for it until
// fleet.lookup_wait after the first connection (retained records arrive
// just after subscribing); without a connection, until connect_wait plus
// lookup_wait after the start.
func (a *Agent) fleetHint(ctx context.Context, k storage.Validity) (fleet.Record, bool) {
	f := a.fleet
	cfg := a.config()
	if f == nil || !cfg.Fleet.Subscribe {
		return fleet.Record{}, false
	}
	for {
		changed := f.view.Changed()
		if r, ok := f.view.Get(k); ok {
			return r, true
		}
		deadline := a.opts.Started.Add(cfg.MQTT.ConnectWait + cfg.Fleet.LookupWait)
		if at := f.connected.Load(); at != nil {
			deadline = at.Add(cfg.Fleet.LookupWait)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fleet.Record{}, false
		}
		select {
		case <-ctx.Done():
			return fleet.Record{}, false
		case <-changed:
		case <-time.After(left):
		}
	}
}

// fleetLocal is what a record for work under key k must fit here.
func (a *Agent) fleetLocal(work *modelState, k storage.Validity) fleet.Local {
	var size int64
	if fi, err := os.Stat(work.path); err == nil {
		size = fi.Size()
	}
	return fleet.Local{Key: k, Cores: runtime.NumCPU(), Mapped: size, Now: a.opts.Now()}
}

// adoptFleet serves work with the twins' record for key k when there is a
// usable one; it is stored here as the fleet's, to be verified.
func (a *Agent) adoptFleet(ctx context.Context, work *modelState, k storage.Validity) bool {
	rec, ok := a.fleetHint(ctx, k)
	if !ok {
		return false
	}
	id := work.cfg.ID
	if err := rec.Check(a.fleetLocal(work, k)); err != nil {
		a.log.Warn("fleet record rejected; measuring here", "model", id, "err", err)
		a.tel.event("fleet_rejected", map[string]any{"model": id, "from": rec.Device, "reason": err.Error()})
		return false
	}
	cal := rec.Calibration()
	if err := a.store.PutCalibration(id, cal); err != nil {
		a.log.Error("fleet calibration not stored; used for this run only", "model", id, "err", err)
	}
	a.useCalibration(work, cal)
	a.log.Info("calibration from the fleet", "model", id, "status", storage.Fleet, "from", rec.Device,
		"samples", rec.Samples, "threads", cal.Threads)
	a.tel.event("fleet_calibration", map[string]any{"model": id, "from": rec.Device, "samples": rec.Samples, "threads": cal.Threads})
	return true
}

// useCalibration makes cal work's calibration, and says where it came from.
func (a *Agent) useCalibration(work *modelState, cal storage.Calibration) {
	work.cal = cal
	work.report.Threads = cal.Threads
	work.report.Calibrated = &cal
	if cal.Source == storage.SourceFleet {
		reason := "from " + cal.From
		if cal.Verified {
			reason += ", verified here"
		}
		work.report.Calibration = storage.Lookup{Status: storage.Fleet, Reason: reason}
	}
}

// needsVerifying says st serves with a twin's record not yet checked here.
func (st *modelState) needsVerifying() bool {
	return st.cal.Source == storage.SourceFleet && !st.cal.Verified
}

// verifyAttempts is how many measuring loads must all disagree with a
// fleet record before it is measured over: one load on a busy board (its
// own work, a twin's start) can be several times slower than the truth.
const verifyAttempts = 3

// verifyFleet checks work's fleet calibration with a measuring load at its
// thread count. Agreeing, it is marked verified; disagreeing on every
// attempt (spaced out and jittered), the model is measured here in full
// and the local result kept (published when it has more samples).
func (a *Agent) verifyFleet(ctx context.Context, st, work *modelState) {
	id := work.cfg.ID
	cal := work.cal
	if err := a.calib.yieldToRequests(ctx); err != nil {
		return // verified at the next start
	}
	// A load the pool made anyway (the start's prewarm, a request) is a
	// free measurement: agreeing, no measuring load is needed.
	if heap, ok := a.agreesWithLastLoad(work); ok {
		a.verified(ctx, st, work, "the pool's load", heap)
		return
	}
	c := a.calib.calibrationRun()
	// Checking needs fewer invokes than choosing among thread counts: a
	// disagreement is measured again anyway before it is believed.
	c.Steady = min(c.Steady, 2)
	var believed, doubted string // the last disagreement taken, and one not taken
	for attempt := 1; attempt <= verifyAttempts; attempt++ {
		if attempt > 1 {
			select {
			case <-ctx.Done():
				return // verified at the next start
			case <-time.After(time.Second + time.Duration(a.opts.Rand()*float64(2*time.Second))):
			}
		}
		rep, steady, err := c.Measure(ctx, work.path, tflite.Options{Threads: cal.Threads, Delegates: work.chosen})
		work.report.CalibrationCPU += c.CPU
		c.CPU = 0
		switch {
		case ctx.Err() != nil || errors.Is(err, context.Canceled):
			return // verified at the next start
		case err != nil:
			a.log.Warn("fleet calibration not verified: the measuring load failed; measuring here", "model", id, "err", err)
			a.calib.measureHere(ctx, st, work, cal.Validity)
			return
		}
		why, timing := disagreement(cal, steady, rep.Footprint.Heap, a.config().Fleet.Tolerance)
		a.log.Debug("fleet calibration measured", "model", id, "steady_ms", ms(steady.Wall), "fleet_steady_ms", ms(cal.Stages.Steady),
			"steady_cpu_ms", ms(steady.CPU), "fleet_steady_cpu_ms", ms(cal.SteadyCPU), "contention", steady.Contention)
		if why == "" {
			a.verified(ctx, st, work, "a measuring load", rep.Footprint.Heap)
			return
		}
		// Times measured while the process waited for the cores are this
		// moment's load, not the board's: they neither confirm nor refute.
		if timing && steady.Contention > maxContention {
			doubted = fmt.Sprintf("%s, the threads waiting for a CPU %.0f%% of the time", why, 100*steady.Contention)
		} else {
			believed = why
		}
		a.log.Info("fleet calibration: a measuring load disagrees", "model", id, "attempt", attempt, "of", verifyAttempts, "why", why,
			"contention", steady.Contention)
	}
	if believed == "" {
		a.log.Info("fleet calibration not verified yet: the cores were busy; kept, and checked at the next start", "model", id, "from", cal.From, "why", doubted)
		work.report.Calibration.Reason = "from " + cal.From + ", not verified yet: cores busy"
		a.calib.apply(ctx, st, work, nil)
		return
	}
	a.log.Warn("fleet calibration disagrees with this device; measuring here", "model", id, "from", cal.From, "why", believed)
	a.tel.event("fleet_disagreed", map[string]any{"model": id, "from": cal.From, "why": believed})
	work.report.Calibration = storage.Lookup{Status: storage.New, Reason: "fleet record disagreed: " + believed}
	a.calib.measureHere(ctx, st, work, cal.Validity)
}

// maxContention is the run-queue wait (per wall second) above which a
// measured time says more about the moment than about the board.
const maxContention = 0.1

// agreesWithLastLoad says the pool's last load of work, at the record's
// thread count, agrees with the record: heap, and first invoke. heap is
// what that load measured.
func (a *Agent) agreesWithLastLoad(work *modelState) (heap int64, ok bool) {
	cal := work.cal
	for _, m := range a.pool.Models() {
		if m.ID != work.cfg.ID || m.Loads == 0 {
			continue
		}
		l := m.LastLoad
		if l.Threads != cal.Threads || l.Stages.FirstInvoke <= 0 || l.Footprint.Heap <= 0 {
			return 0, false
		}
		why := fleet.CompareTime("first invoke", l.Stages.FirstInvoke, cal.Stages.FirstInvoke, a.config().Fleet.Tolerance)
		if why == "" {
			why = fleet.CompareHeap(l.Footprint.Heap, cal.HeapBytes)
		}
		if why != "" {
			a.log.Info("fleet calibration: the pool's load disagrees; measuring", "model", work.cfg.ID, "why", why)
		}
		return l.Footprint.Heap, why == ""
	}
	return 0, false
}

// verified marks work's fleet calibration as checked here (by how, which
// measured heap). A record's heap may be up to a quarter below this
// device's and still agree: the larger of the two is kept, so the pool
// never accounts less than this device was seen to hold.
func (a *Agent) verified(ctx context.Context, st, work *modelState, how string, heap int64) {
	cal := work.cal
	cal.Verified = true
	cal.HeapBytes = max(cal.HeapBytes, heap)
	if err := a.store.PutCalibration(work.cfg.ID, cal); err != nil {
		a.log.Error("verified fleet calibration not stored", "model", work.cfg.ID, "err", err)
	}
	a.useCalibration(work, cal)
	a.log.Info("fleet calibration verified", "model", work.cfg.ID, "from", cal.From, "by", how)
	a.calib.apply(ctx, st, work, nil)
}

// disagreement says how one measuring load differs from cal beyond the
// tolerance ("" when it agrees), and whether it is the time that differs.
// The heap is the runtime's arena plan, the same on every twin and under
// any load, so it is checked first: busy cores, which make a time
// disagreement doubtful, must not hide a wrong heap. Time is compared as
// CPU time per invoke when both sides have it.
func disagreement(cal storage.Calibration, steady calibrate.SteadyTimes, heap int64, tol float64) (string, bool) {
	if why := fleet.CompareHeap(heap, cal.HeapBytes); why != "" {
		return why, false
	}
	why := fleet.CompareTime("steady invoke", steady.Wall, cal.Stages.Steady, tol)
	if steady.CPU > 0 && cal.SteadyCPU > 0 {
		why = fleet.CompareTime("steady invoke CPU", steady.CPU, cal.SteadyCPU, tol)
	}
	return why, why != ""
}

// fleetPublish queues this device's calibration of work for the twins,
// unless the record they have is valid, agrees with it and has as many
// samples or more. A record this device's measurement contradicts is
// published over whatever its sample count: otherwise one wrong record
// with many samples would hold its key for ever.
func (a *Agent) fleetPublish(work *modelState, cal storage.Calibration) {
	f := a.fleet
	if f == nil || !a.config().Fleet.Publish {
		return
	}
	id := work.cfg.ID
	rec := fleet.FromCalibration(cal, a.config().device(), delegateOutcome(work.report.Delegate))
	// Never overwrite a valid, agreeing record with fewer samples, nor with
	// as many: twins whose measurements differ by noise would take turns.
	if held, ok := f.view.Get(cal.Validity); ok && held.Check(a.fleetLocal(work, cal.Validity)) == nil {
		why := held.Contradicts(cal, a.config().Fleet.Tolerance)
		if why == "" && held.Samples >= rec.Samples {
			a.log.Info("calibration not published: the fleet's record has as many samples", "model", id,
				"samples", rec.Samples, "fleet_samples", held.Samples, "from", held.Device)
			return
		}
		if why != "" {
			f.view.Refute(held)
			a.log.Warn("fleet record contradicted by this device; publishing over it", "model", id, "from", held.Device,
				"fleet_samples", held.Samples, "why", why)
			a.tel.event("fleet_superseded", map[string]any{"model": id, "from": held.Device, "why": why})
		}
	}
	b, err := rec.Encode()
	if err != nil {
		a.log.Error("fleet record not encoded", "model", id, "err", err)
		return
	}
	topic := f.view.Topic(cal.Validity)
	f.mu.Lock()
	f.pending[topic] = b
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// fleetLoop publishes queued records whenever connected. What the broker
// did not take stays queued for the next connection. Once, lookup_wait
// after the first connection (the retained records are in by then), it
// offers what this device measured before it shared (restored from state).
func (a *Agent) fleetLoop(ctx context.Context) {
	f := a.fleet
	var share <-chan time.Time
	armed := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-share:
			share = nil
			a.shareKnown()
		case <-f.kick:
		}
		if !armed && f.connected.Load() != nil {
			armed = true
			share = time.After(a.config().Fleet.LookupWait)
		}
		f.mu.Lock()
		batch := make(map[string][]byte, len(f.pending))
		for t, b := range f.pending {
			batch[t] = b
		}
		f.mu.Unlock()
		for topic, b := range batch {
			if err := a.tel.mq.PublishNow(ctx, topic, true, b); err != nil {
				if !errors.Is(err, mqtt.ErrNotConnected) && ctx.Err() == nil {
					a.log.Warn("fleet record not published yet", "topic", topic, "err", err)
				}
				break
			}
			f.mu.Lock()
			if string(f.pending[topic]) == string(b) {
				delete(f.pending, topic)
			}
			f.mu.Unlock()
			if err := f.view.Offer(topic, b); err != nil {
				a.log.Warn("own fleet record not taken into the view", "topic", topic, "err", err)
			}
			a.log.Info("calibration published to the fleet", "topic", topic)
		}
	}
}

// shareKnown offers the twins every calibration this device measured and
// restored from its state (fleetPublish skips those the fleet has with as
// many samples): a fleet that turns sharing on starts from what it knows.
func (a *Agent) shareKnown() {
	var known []modelState
	a.reg.each(func(st *modelState) {
		if c := st.cal; c.Threads > 0 && c.Source == "" && !c.Pending && c.Failed == "" && st.report.Calibration.Status == storage.Restored {
			known = append(known, *st)
		}
	})
	for i := range known {
		a.fleetPublish(&known[i], known[i].cal)
	}
}

// delegateOutcome is the delegate part of a fleet record.
func delegateOutcome(d DelegateReport) fleet.Delegate {
	out := fleet.Delegate{Chosen: d.Chosen}
	for _, t := range d.Tried {
		out.Tried = append(out.Tried, t.Name+":"+string(t.State))
	}
	return out
}
