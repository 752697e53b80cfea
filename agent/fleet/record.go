// Package fleet is the record devices share their measurements in: what
// one board measured about a model (calibration, delegate outcome) is
// published, retained, under the key a twin board with the same runtime
// would look it up by, so the twin starts warm instead of measuring again.
//
// A record is a hint. This package decodes it strictly, checks it against
// the local key and what is physically possible, and says which of two
// records wins; the agent decides when to use, verify and publish one.
package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/storage"
)

// Schema is the record version this build writes and reads. Records of
// other versions are ignored, not misread.
const Schema = 1

// MaxBytes bounds a record's payload: a calibration is a few hundred bytes.
const MaxBytes = 16 << 10

// MaxSamples bounds a record's sample count: a calibration's medians are
// over at most calibration.runs staged loads, which is at most 50. More is
// forged, and would win every merge (Better) for ever.
const MaxSamples = 50

// Record is one device's measurement of one model under one validity key.
type Record struct {
	Schema   int              `json:"schema"`
	Validity storage.Validity `json:"validity"`
	Facts    Facts            `json:"facts"`
	// Delegate is the outcome of the delegates tried on the publishing
	// device: informative only, since a delegate's failures (and crashes)
	// are always learned, and kept, locally.
	Delegate Delegate `json:"delegate"`
	// Samples is how many staged loads the medians are over; Spread their
	// relative spread. Records merge by Samples, then At.
	Samples int       `json:"samples"`
	Spread  float64   `json:"spread"`
	Device  string    `json:"device"`
	At      time.Time `json:"at"`
}

// Facts is the calibration a twin can reuse.
type Facts struct {
	Threads            int                    `json:"threads"`
	Tried              []storage.ThreadResult `json:"tried"`
	Stages             storage.Stages         `json:"stages_ns"`
	SteadyCPU          time.Duration          `json:"steady_cpu_ns"`
	FirstInvokePenalty float64                `json:"first_invoke_penalty"`
	HeapBytes          int64                  `json:"heap_bytes"`
	MappedBytes        int64                  `json:"mapped_bytes"`
}

// Delegate is which delegate the model ran on, and what was tried.
type Delegate struct {
	Chosen string   `json:"chosen"`
	Tried  []string `json:"tried,omitempty"` // "name:state"
}

// FromCalibration is the record of what device measured.
func FromCalibration(cal storage.Calibration, device string, del Delegate) Record {
	return Record{
		Schema: Schema, Validity: cal.Validity, Delegate: del,
		Facts: Facts{Threads: cal.Threads, Tried: cal.Tried, Stages: cal.Stages, SteadyCPU: cal.SteadyCPU, FirstInvokePenalty: cal.FirstInvokePenalty,
			HeapBytes: cal.HeapBytes, MappedBytes: cal.MappedBytes},
		Samples: cal.Runs, Spread: cal.Spread, Device: device, At: cal.At,
	}
}

// Calibration is r as a calibration to serve with, marked as the fleet's
// and not yet verified here.
func (r Record) Calibration() storage.Calibration {
	f := r.Facts
	return storage.Calibration{
		Validity: r.Validity, Threads: f.Threads, Tried: f.Tried, Stages: f.Stages, SteadyCPU: f.SteadyCPU, FirstInvokePenalty: f.FirstInvokePenalty,
		HeapBytes: f.HeapBytes, MappedBytes: f.MappedBytes, Runs: r.Samples, Spread: r.Spread, At: r.At,
		Source: storage.SourceFleet, From: r.Device,
	}
}

// Encode is r's payload.
func (r Record) Encode() ([]byte, error) {
	r.Schema = Schema
	return json.Marshal(r)
}

// ErrUnknownSchema is a record of another version: skipped, not an attack.
var ErrUnknownSchema = errors.New("fleet record: unknown schema version")

// Decode reads a record as strictly as a command: bounded size, no unknown
// fields, nothing after the object.
func Decode(payload []byte) (Record, error) {
	var r Record
	if len(payload) > MaxBytes {
		return r, fmt.Errorf("fleet record: %d bytes, more than %d", len(payload), MaxBytes)
	}
	var head struct {
		Schema int `json:"schema"`
	}
	if err := json.Unmarshal(payload, &head); err != nil {
		return r, fmt.Errorf("fleet record: %w", err)
	}
	if head.Schema != Schema {
		return r, fmt.Errorf("%w %d (this build reads %d)", ErrUnknownSchema, head.Schema, Schema)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("fleet record: %w", err)
	}
	if dec.More() {
		return r, errors.New("fleet record: data after the object")
	}
	return r, nil
}

// Local is what this device knows that a record must fit.
type Local struct {
	Key   storage.Validity // the validity key the record must have
	Cores int              // threads beyond them are impossible here
	// Mapped is the model file's size here: same digest, same size.
	Mapped int64
	Now    time.Time
}

// maxStage bounds any stage: a record saying a load takes hours is wrong.
const maxStage = time.Hour

// Check says why r cannot be used here, or nil: it must be for exactly
// this key, and its facts must be possible on this board.
func (r Record) Check(l Local) error {
	if r.Validity != l.Key {
		return fmt.Errorf("fleet record for another %s", strings.Join(r.Validity.Diff(l.Key), ","))
	}
	f := r.Facts
	var bad []string
	if f.Threads < 1 || f.Threads > l.Cores {
		bad = append(bad, fmt.Sprintf("threads %d not in 1..%d cores", f.Threads, l.Cores))
	}
	if r.Samples < 1 || r.Samples > MaxSamples {
		bad = append(bad, fmt.Sprintf("samples %d not in 1..%d", r.Samples, MaxSamples))
	}
	if f.MappedBytes != l.Mapped {
		bad = append(bad, fmt.Sprintf("mapped %d bytes, the file has %d", f.MappedBytes, l.Mapped))
	}
	if f.HeapBytes < 0 || f.HeapBytes > 1<<40 {
		bad = append(bad, fmt.Sprintf("heap %d bytes", f.HeapBytes))
	}
	s := f.Stages
	for name, d := range map[string]time.Duration{"map": s.Map, "page_in": s.PageIn, "interpreter": s.Interpreter, "allocate": s.Allocate, "steady_cpu": f.SteadyCPU} {
		if d < 0 || d > maxStage {
			bad = append(bad, fmt.Sprintf("%s stage %v", name, d))
		}
	}
	for name, d := range map[string]time.Duration{"first_invoke": s.FirstInvoke, "steady": s.Steady} {
		if d <= 0 || d > maxStage {
			bad = append(bad, fmt.Sprintf("%s stage %v (want > 0)", name, d))
		}
	}
	if p := f.FirstInvokePenalty; p < 0 || math.IsNaN(p) || math.IsInf(p, 0) {
		bad = append(bad, fmt.Sprintf("first invoke penalty %v", p))
	}
	if sp := r.Spread; sp < 0 || math.IsNaN(sp) || math.IsInf(sp, 0) {
		bad = append(bad, fmt.Sprintf("spread %v", sp))
	}
	for _, t := range f.Tried {
		if t.Threads < 1 || t.Threads > l.Cores || !(t.SteadyMs > 0) || math.IsInf(t.SteadyMs, 0) {
			bad = append(bad, fmt.Sprintf("tried %d threads at %v ms", t.Threads, t.SteadyMs))
			break
		}
	}
	if r.At.After(l.Now.Add(24 * time.Hour)) {
		bad = append(bad, "published in the future: "+r.At.Format(time.RFC3339))
	}
	if len(bad) > 0 {
		return fmt.Errorf("fleet record from %q impossible here: %s", r.Device, strings.Join(bad, "; "))
	}
	return nil
}

// Contradicts says how this device's own measurement here contradicts r
// ("" when it does not): the heap beyond a quarter (the runtime's arena
// plan, the same on every twin), or the steady invoke beyond a factor
// 1+tol. A contradicted record is superseded (View.Refute) and this
// device's record published over it, whatever the sample counts.
func (r Record) Contradicts(here storage.Calibration, tol float64) string {
	if here.HeapBytes > 0 {
		if why := CompareHeap(here.HeapBytes, r.Facts.HeapBytes); why != "" {
			return why
		}
	}
	if here.Stages.Steady > 0 {
		return CompareTime("steady invoke", here.Stages.Steady, r.Facts.Stages.Steady, tol)
	}
	return ""
}

// CompareTime says how here differs from there beyond a factor 1+tol, or "".
func CompareTime(what string, here, there time.Duration, tol float64) string {
	// Sub-millisecond times jitter by more than their own length.
	const floor = time.Millisecond
	hi := max(time.Duration(float64(there)*(1+tol)), there+floor)
	lo := min(time.Duration(float64(there)/(1+tol)), there-floor)
	if here > hi || here < lo {
		return fmt.Sprintf("%s %.3f ms here, %.3f ms in the record", what, ms(here), ms(there))
	}
	return ""
}

// CompareHeap says how heap differs from the record's beyond a quarter, or "".
func CompareHeap(here, there int64) string {
	// The heap is measured as the allocator's growth over the load, which
	// other goroutines' frees shift by a little.
	const floor = 1 << 20
	d := here - there
	if d < 0 {
		d = -d
	}
	if d > max(there/4, floor) {
		return fmt.Sprintf("heap %d bytes here, %d in the record", here, there)
	}
	return ""
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// Better is the merge rule: more samples win, then the newer record.
func Better(a, b Record) bool {
	if a.Samples != b.Samples {
		return a.Samples > b.Samples
	}
	return a.At.After(b.At)
}

// Filter is the topic filter of every record for one board and runtime.
func Filter(prefix, hardware, runtime string) string {
	return prefix + "/fleet/" + escape(hardware) + "/" + escape(runtime) + "/+/+"
}

// Topic is where the record for key v lives.
func Topic(prefix string, v storage.Validity) string {
	return prefix + "/fleet/" + escape(v.Hardware) + "/" + escape(v.Runtime) + "/" + escape(v.Model) + "/" + escape(v.Options)
}

// escape makes s one topic level: no "/" (a level separator), "+" or "#"
// (wildcards), NUL or anything outside a conservative set.
func escape(s string) string {
	if s == "" {
		return "_"
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("._=,-@:", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
