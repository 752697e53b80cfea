package agent

import (
	"context"
	"errors"
	"reflect"
	"time"

	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// Readiness states of a model, in the retained status and "status".
const (
	StateRegistered  = "registered"  // servable: the first request loads it (cold)
	StateWarming     = "warming"     // an interpreter is being warmed
	StateWarm        = "warm"        // an interpreter is ready: no cold start
	StateCalibrating = "calibrating" // measured in the background; still servable
	StateFailed      = "failed"      // it cannot run here; Code says why
)

// ModelReadiness is what a client may expect of a model right now. Every
// state but failed answers requests; Code and Message say what went wrong
// when something did (a model can serve with a failed calibration).
type ModelReadiness struct {
	State string `json:"state"`
	// Calibration: restored, measured, fleet (a twin's record, used while
	// and after it is verified here), queued, calibrating or failed.
	Calibration string `json:"calibration"`
	Code        string `json:"code,omitempty"`
	Message     string `json:"message,omitempty"`
}

// readiness says what a client may expect of each model (the retained
// status, "status", the OIP's ready checks) and keeps the outcome of the
// models' loads. It holds no lock of its own: it asks the pool before it
// reaches the models' states, never while it holds their lock. Its
// publisher runs under the agent's runCtx.
type readiness struct {
	readinessDeps
	kick chan struct{} // readiness may have changed (cap 1)
}

// readinessDeps is what readiness asks of the agent. pool and mq are
// functions: both exist only once the agent has started.
type readinessDeps struct {
	pool func() *tflite.Pool
	mq   func() *mqtt.Client // nil without brokers
	// pending are the ids configured but not registered yet.
	pending func() []string
	// eachModel calls f for every registered model (failed ones
	// included), withModel for model id if it is registered, under the
	// lock that guards the models' states: f reads or writes the state's
	// fields only, takes no lock and never blocks.
	eachModel func(f func(id string, st *modelState))
	withModel func(id string, f func(st *modelState))
}

func newReadiness(d readinessDeps) *readiness {
	return &readiness{readinessDeps: d, kick: make(chan struct{}, 1)}
}

// models is every configured model's readiness.
func (r *readiness) models() map[string]ModelReadiness {
	pool := map[string]tflite.ModelStatus{}
	if p := r.pool(); p != nil {
		for _, m := range p.Models() {
			pool[m.ID] = m
		}
	}
	out := map[string]ModelReadiness{}
	r.eachModel(func(id string, st *modelState) {
		mr := ModelReadiness{State: StateRegistered, Calibration: "measured"}
		switch {
		case st.failed != nil && st.cal.Threads == 0:
			mr.Calibration = "failed"
		case st.cal.Source == storage.SourceFleet:
			mr.Calibration = string(storage.Fleet)
		case st.calibrating:
			mr.Calibration = "calibrating"
		case st.queued:
			mr.Calibration = "queued"
		case st.report.Calibration.Status == storage.Restored:
			mr.Calibration = "restored"
		}
		ps := pool[id]
		fail := st.failed
		if fail == nil {
			fail = st.loadErr
		}
		if fail != nil {
			// Also on a model that serves: a crashed calibration, say.
			mr.Code, mr.Message = fail.Code, fail.Message
		}
		switch {
		case ps.Warm:
			mr.State = StateWarm
		case fail != nil:
			mr.State = StateFailed
		case ps.Loading:
			mr.State = StateWarming
		case st.calibrating:
			mr.State = StateCalibrating
		}
		out[id] = mr
	})
	// Not registered yet, but servable: a request registers it first.
	for _, id := range r.pending() {
		if _, ok := out[id]; !ok {
			out[id] = ModelReadiness{State: StateRegistered, Calibration: "queued"}
		}
	}
	return out
}

// statusFields are the agent's fields of the retained online status.
func (r *readiness) statusFields() map[string]any {
	return map[string]any{"models": r.models()}
}

// statusChanged tells the status publisher readiness may have changed.
func (r *readiness) statusChanged() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// statusPublisher keeps the retained status's readiness current: on news
// (coalesced over a short pause, so a burst of loads is one message) and
// every few seconds, publishing only what changed.
func (r *readiness) statusPublisher(ctx context.Context) {
	var last map[string]any
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		case <-tick.C:
		}
		f := r.statusFields()
		mq := r.mq()
		if mq == nil || reflect.DeepEqual(f, last) {
			continue
		}
		mq.SetStatus(f)
		last = f
	}
}

// calibrations are the models' calibrations, by id (zero when unknown).
func (r *readiness) calibrations() map[string]storage.Calibration {
	out := map[string]storage.Calibration{}
	r.eachModel(func(id string, st *modelState) { out[id] = st.cal })
	return out
}

// noteLoad records the outcome of loading model: a failure of the model
// itself (not a cancellation, a full budget or a busy pool) makes it
// failed until a load succeeds.
func (r *readiness) noteLoad(model string, err error) {
	var report *ErrorReport
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
			errors.Is(err, tflite.ErrOverBudget) || errors.Is(err, tflite.ErrPoolClosed) || errors.Is(err, tflite.ErrBusy) {
			return
		}
		report = errorReport(err)
	}
	var changed bool
	r.withModel(model, func(st *modelState) {
		changed = !reflect.DeepEqual(st.loadErr, report)
		st.loadErr = report
		if report != nil && st.report.Error == nil {
			st.report.Error = report
		}
	})
	if changed {
		r.statusChanged()
	}
}

// modelError is the error a request for a model the pool does not serve
// gets: the model's own failure when it is configured but failed.
func (r *readiness) modelError(id string, err error) error {
	if !errors.Is(err, tflite.ErrUnknownModel) {
		return err
	}
	var failed *ErrorReport
	r.withModel(id, func(st *modelState) { failed = st.failed })
	if failed != nil {
		return &modelFailure{id: id, r: failed}
	}
	return err
}

// labelsFor are model's labels (nil when it has none).
func (r *readiness) labelsFor(model string) []string {
	var labels []string
	r.withModel(model, func(st *modelState) { labels = st.labels })
	return labels
}
