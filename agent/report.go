package agent

import (
	"encoding/json"
	"time"

	"github.com/edge-agent/edge-agent/agent/hardware"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// StartupReport is what a start found and did; `run --report FILE` writes
// it as JSON (schema 1).
type StartupReport struct {
	Schema          int                `json:"schema"`
	Agent           string             `json:"agent"`
	Runtime         string             `json:"runtime"`
	BootID          string             `json:"boot_id"`
	Hardware        hardware.Info      `json:"hardware"`
	Fingerprint     string             `json:"hardware_fingerprint"`
	State           storage.OpenReport `json:"state"`
	BrokerConnected bool               `json:"broker_connected"`
	Timings         StartupTimings     `json:"timings"`
	Models          []ModelReport      `json:"models"`
	Pool            tflite.Stats       `json:"pool"`
	// Process is the agent's memory (RSS) and CPU time at ready.
	Process ProcessStats `json:"process"`
	// Memory is how the memory limit was split: pool, decodes, MQTT
	// queue, slack over the measured baseline.
	Memory *MemoryPlan `json:"memory,omitempty"`
	// Plan is the start's prewarm plan: power state, allowance, chosen and
	// skipped models with reasons, and its energy.
	Plan *PlanResult `json:"plan"`
	// Final marks the report published again once the start's background
	// work (warming after READY, calibration) is done.
	Final bool `json:"final,omitempty"`
}

// StartupTimings split the start into its stages.
// The steps before requests are accepted are StateOpen, Pool, Restore and
// MQTT; Prewarm (the pinned models) comes before READY.
type StartupTimings struct {
	StateOpen     time.Duration // opening and verifying the state file
	BrokerConnect time.Duration // until the broker accepted us (0: not within connect_wait)
	Restore       time.Duration // registering the pinned models: digests, delegates, calibration (the others register after)
	Prewarm       time.Duration // warming the pinned models
	Total         time.Duration // process start → ready
	Pool          time.Duration // creating the pool
	MQTT          time.Duration // starting MQTT: the local broker, connect_wait
}

type timingsJSON struct {
	StateOpenMs     float64 `json:"state_open_ms"`
	BrokerConnectMs float64 `json:"broker_connect_ms"`
	RestoreMs       float64 `json:"restore_ms"`
	PrewarmMs       float64 `json:"prewarm_ms"`
	TotalMs         float64 `json:"total_ms"`
	PoolMs          float64 `json:"pool_ms"`
	MQTTMs          float64 `json:"mqtt_ms"`
}

func (t StartupTimings) MarshalJSON() ([]byte, error) {
	return json.Marshal(timingsJSON{ms(t.StateOpen), ms(t.BrokerConnect), ms(t.Restore), ms(t.Prewarm), ms(t.Total), ms(t.Pool), ms(t.MQTT)})
}

func (t *StartupTimings) UnmarshalJSON(b []byte) error {
	var j timingsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	d := func(v float64) time.Duration { return time.Duration(v * 1e6) }
	*t = StartupTimings{d(j.StateOpenMs), d(j.BrokerConnectMs), d(j.RestoreMs), d(j.PrewarmMs), d(j.TotalMs), d(j.PoolMs), d(j.MQTTMs)}
	return nil
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
	Calibration     storage.Lookup `json:"calibration"`
	CalibrationTime time.Duration  `json:"-"`
	// CalibrationCPU is the process CPU time calibrating (or verifying a
	// fleet record) took.
	CalibrationCPU time.Duration        `json:"-"`
	Calibrated     *storage.Calibration `json:"calibrated,omitempty"`
	Threads        int                  `json:"threads"`
	Delegate       DelegateReport       `json:"delegate"`
	Load           *tflite.LoadReport   `json:"load,omitempty"`
	Error          *ErrorReport         `json:"error,omitempty"`
}

func (m ModelReport) MarshalJSON() ([]byte, error) {
	type plain ModelReport
	return json.Marshal(struct {
		plain
		CalibrationMs    float64 `json:"calibration_ms"`
		CalibrationCPUMs float64 `json:"calibration_cpu_ms"`
	}{plain(m), ms(m.CalibrationTime), ms(m.CalibrationCPU)})
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

func marshalIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
