package agent

import (
	"encoding/json"
	"time"

	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// StartupReport is what a start found and did; `run --report FILE` writes
// it as JSON (schema 1).
type StartupReport struct {
	Schema      int                `json:"schema"`
	Agent       string             `json:"agent"`
	Runtime     string             `json:"runtime"`
	Hardware    Hardware           `json:"hardware"`
	Fingerprint string             `json:"hardware_fingerprint"`
	State       storage.OpenReport `json:"state"`
	Timings     StartupTimings     `json:"timings"`
	Models      []ModelReport      `json:"models"`
	Pool        tflite.Stats       `json:"pool"`
}

// StartupTimings split the start into its stages.
type StartupTimings struct {
	StateOpen time.Duration // opening and verifying the state file
	Restore   time.Duration // digests, delegates, calibration (restored or measured)
	Prewarm   time.Duration // warming the models
	Total     time.Duration // process start → ready
}

func (t StartupTimings) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]float64{
		"state_open_ms": ms(t.StateOpen), "restore_ms": ms(t.Restore),
		"prewarm_ms": ms(t.Prewarm), "total_ms": ms(t.Total),
	})
}

// ModelReport is one model's start.
type ModelReport struct {
	ID           string `json:"id"`
	Path         string `json:"path"`
	Pinned       bool   `json:"pinned"`
	SHA256       string `json:"sha256,omitempty"`
	DigestCached bool   `json:"digest_cached"`
	// Calibration says whether the calibration was restored, invalidated
	// (and why) or new; CalibrationTime is what measuring took (0 when
	// restored).
	Calibration     storage.Lookup       `json:"calibration"`
	CalibrationTime time.Duration        `json:"-"`
	Calibrated      *storage.Calibration `json:"calibrated,omitempty"`
	Threads         int                  `json:"threads"`
	Delegate        DelegateReport       `json:"delegate"`
	Load            *tflite.LoadReport   `json:"load,omitempty"`
	Error           *ErrorReport         `json:"error,omitempty"`
}

func (m ModelReport) MarshalJSON() ([]byte, error) {
	type plain ModelReport
	return json.Marshal(struct {
		plain
		CalibrationMs float64 `json:"calibration_ms"`
	}{plain(m), ms(m.CalibrationTime)})
}

// DelegateReport says which delegate runs the model and what was tried.
type DelegateReport struct {
	Chosen   string        `json:"chosen"`             // a delegate name, or "cpu"
	Fallback string        `json:"fallback,omitempty"` // the CPU twin served instead
	Tried    []DelegateTry `json:"tried"`
}

// DelegateTry is one configured delegate's outcome: restored from state,
// or tried now because nothing was known (new) or what was known was for
// another model, runtime or board (invalidated).
type DelegateTry struct {
	Name   string                `json:"name"`
	State  storage.DelegateState `json:"state"`
	Reason string                `json:"reason,omitempty"` // why it failed
	Status storage.Status        `json:"status"`
	// InvalidatedBy lists what changed when Status is invalidated.
	InvalidatedBy string `json:"invalidated_by,omitempty"`
}

// ErrorReport is a failure with its stable code.
type ErrorReport struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func errorReport(err error) *ErrorReport {
	return &ErrorReport{Code: tflite.Code(err), Message: err.Error()}
}

// eventPayload is a telemetry event's JSON (schema 1).
func eventPayload(kind string, fields map[string]any) ([]byte, error) {
	m := map[string]any{"schema": SchemaVersion, "event": kind, "at": time.Now().UTC().Format(time.RFC3339Nano)}
	for k, v := range fields {
		m[k] = v
	}
	return json.Marshal(m)
}

func marshalIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
