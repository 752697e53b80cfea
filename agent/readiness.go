package agent

import (
	"context"
	"errors"
	"reflect"
	"time"

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

// readiness is every configured model's readiness.
func (a *Agent) readiness() map[string]ModelReadiness {
	pool := map[string]tflite.ModelStatus{}
	if a.pool != nil {
		for _, m := range a.pool.Models() {
			pool[m.ID] = m
		}
	}
	a.reg.mu.Lock()
	defer a.reg.mu.Unlock()
	out := make(map[string]ModelReadiness, len(a.reg.models))
	for id, st := range a.reg.models {
		r := ModelReadiness{State: StateRegistered, Calibration: "measured"}
		switch {
		case st.failed != nil && st.cal.Threads == 0:
			r.Calibration = "failed"
		case st.cal.Source == storage.SourceFleet:
			r.Calibration = string(storage.Fleet)
		case st.calibrating:
			r.Calibration = "calibrating"
		case st.queued:
			r.Calibration = "queued"
		case st.report.Calibration.Status == storage.Restored:
			r.Calibration = "restored"
		}
		ps := pool[id]
		fail := st.failed
		if fail == nil {
			fail = st.loadErr
		}
		if fail != nil {
			// Also on a model that serves: a crashed calibration, say.
			r.Code, r.Message = fail.Code, fail.Message
		}
		switch {
		case ps.Warm:
			r.State = StateWarm
		case fail != nil:
			r.State = StateFailed
		case ps.Loading:
			r.State = StateWarming
		case st.calibrating:
			r.State = StateCalibrating
		}
		out[id] = r
	}
	// Not registered yet, but servable: a request registers it first.
	for _, id := range a.reg.pending.ids() {
		if _, ok := out[id]; !ok {
			out[id] = ModelReadiness{State: StateRegistered, Calibration: "queued"}
		}
	}
	return out
}

// statusFields are the agent's fields of the retained online status.
func (a *Agent) statusFields() map[string]any {
	return map[string]any{"models": a.readiness()}
}

// statusChanged tells the status publisher readiness may have changed.
func (a *Agent) statusChanged() {
	select {
	case a.statusKick <- struct{}{}:
	default:
	}
}

// statusPublisher keeps the retained status's readiness current: on news
// (coalesced over a short pause, so a burst of loads is one message) and
// every few seconds, publishing only what changed.
func (a *Agent) statusPublisher(ctx context.Context) {
	var last map[string]any
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.statusKick:
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		case <-tick.C:
		}
		f := a.statusFields()
		if a.tel.mq == nil || reflect.DeepEqual(f, last) {
			continue
		}
		a.tel.mq.SetStatus(f)
		last = f
	}
}

// calibrations are the models' calibrations, by id (zero when unknown).
func (a *Agent) calibrations() map[string]storage.Calibration {
	a.reg.mu.Lock()
	defer a.reg.mu.Unlock()
	out := make(map[string]storage.Calibration, len(a.reg.models))
	for id, st := range a.reg.models {
		out[id] = st.cal
	}
	return out
}

// noteLoad records the outcome of loading model: a failure of the model
// itself (not a cancellation, a full budget or a busy pool) makes it
// failed until a load succeeds.
func (a *Agent) noteLoad(model string, err error) {
	var report *ErrorReport
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
			errors.Is(err, tflite.ErrOverBudget) || errors.Is(err, tflite.ErrPoolClosed) || errors.Is(err, tflite.ErrBusy) {
			return
		}
		report = errorReport(err)
	}
	a.reg.mu.Lock()
	st, ok := a.reg.models[model]
	changed := ok && !reflect.DeepEqual(st.loadErr, report)
	if ok {
		st.loadErr = report
		if report != nil && st.report.Error == nil {
			st.report.Error = report
		}
	}
	a.reg.mu.Unlock()
	if changed {
		a.statusChanged()
	}
}

// modelError is the error a request for a model the pool does not serve
// gets: the model's own failure when it is configured but failed.
func (a *Agent) modelError(id string, err error) error {
	if !errors.Is(err, tflite.ErrUnknownModel) {
		return err
	}
	a.reg.mu.Lock()
	defer a.reg.mu.Unlock()
	if st, ok := a.reg.models[id]; ok && st.failed != nil {
		return &modelFailure{id: id, r: st.failed}
	}
	return err
}

func (a *Agent) labelsFor(model string) []string {
	a.reg.mu.Lock()
	defer a.reg.mu.Unlock()
	if st, ok := a.reg.models[model]; ok {
		return st.labels
	}
	return nil
}
