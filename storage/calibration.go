package storage

import (
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Stages are the timed steps of a cold start. The fields match the pool's
// own timings one for one, so the agent converts with a type conversion
// while this package stays independent of the runtime's.
type Stages struct {
	Map, PageIn, Interpreter, Allocate, FirstInvoke, Steady time.Duration
}

// Calibration is what the agent measured about one model on this board.
// Stored in bucket "calibration" under its Validity's key; bucket "models"
// maps the model id to the Validity last calibrated, so a changed key is
// reported as invalidated rather than new.
type Calibration struct {
	Validity Validity `json:"validity"`
	// Threads is the best thread count found (or the configured one).
	Threads int `json:"threads"`
	// Tried holds the steady latency of each thread count tried.
	Tried []ThreadResult `json:"tried"`
	// Stages are per-stage medians over the calibration runs at Threads.
	Stages Stages `json:"stages"`
	// SteadyCPU is the process CPU time of one steady invoke at Threads
	// (median over the runs): what a twin compares, since other load on
	// the cores stretches wall time far more than CPU time.
	SteadyCPU time.Duration `json:"steady_cpu_ns,omitempty"`
	// FirstInvokePenalty is median first invoke / median steady invoke.
	FirstInvokePenalty float64 `json:"first_invoke_penalty"`
	// HeapBytes per interpreter and MappedBytes of the model, measured at
	// Threads; the pool admits with them before loading.
	HeapBytes   int64 `json:"heap_bytes"`
	MappedBytes int64 `json:"mapped_bytes"`
	// Runs is how many staged loads the medians are over: the sample
	// count fleet records are merged by.
	Runs int `json:"runs"`
	// Spread is the relative spread of the runs' cold starts, (max-min)/median.
	Spread float64   `json:"spread"`
	At     time.Time `json:"at"`
	// Source is "" for what this device measured, SourceFleet for what a
	// twin published (From names it); Verified says a local measurement
	// has since agreed with it.
	Source   string `json:"source,omitempty"`
	From     string `json:"from,omitempty"`
	Verified bool   `json:"verified,omitempty"`
	// Pending marks a calibration begun and not finished: found at the
	// next start, it means the process died inside it (a crashing kernel),
	// and the model is not measured again for the same key.
	Pending bool `json:"pending,omitempty"`
	// Failed is the error code of a calibration that failed (FailedMessage
	// says more); it is not retried for the same key.
	Failed        string `json:"failed,omitempty"`
	FailedMessage string `json:"failed_message,omitempty"`
	// LearnedMisses are what the model's latest misses cost over a warm
	// request (the pool's learned cold cost, oldest first), stored with
	// the calibration they were learned under so a restart ranks by them.
	LearnedMisses []time.Duration `json:"learned_misses_ns,omitempty"`
}

// SourceFleet marks a calibration taken from a twin's fleet record.
const SourceFleet = "fleet"

// ThreadResult is one thread count's steady latency (median).
type ThreadResult struct {
	Threads  int     `json:"threads"`
	SteadyMs float64 `json:"steady_ms"`
}

// modelRecord is bucket "models": id → the keys facts were last stored
// under, so a fact missing for the current key can be told apart as
// invalidated (known for another key) or new.
type modelRecord struct {
	Calibration *Validity           `json:"calibration,omitempty"`
	Delegates   map[string]Validity `json:"delegates,omitempty"`
}

func getModelRecord(tx *bolt.Tx, id string) modelRecord {
	var mr modelRecord
	if raw := tx.Bucket(bucketModels).Get([]byte(id)); raw != nil {
		_ = decodeJSON(raw, &mr) // a damaged index entry only loses "invalidated" vs "new"
	}
	return mr
}

func putModelRecord(tx *bolt.Tx, id string, mr modelRecord) error {
	rec, err := encodeJSON(mr)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketModels).Put([]byte(id), rec)
}

// Calibration returns the calibration of model id valid for v, and whether
// it was restored, invalidated (stored for another key) or is new.
func (s *Store) Calibration(id string, v Validity) (Calibration, Lookup, error) {
	var cal Calibration
	look := Lookup{Status: New}
	err := s.view("read calibration", func(tx *bolt.Tx) error {
		if raw := tx.Bucket(bucketCalibration).Get(v.key()); raw != nil {
			if err := decodeJSON(raw, &cal); err != nil {
				return err
			}
			look = Lookup{Status: Restored}
			return nil
		}
		if mr := getModelRecord(tx, id); mr.Calibration != nil {
			look = invalidated(*mr.Calibration, v)
		}
		return nil
	})
	return cal, look, err
}

// PutCalibration stores cal for model id under cal.Validity, replacing what
// was stored for the id's previous key.
func (s *Store) PutCalibration(id string, cal Calibration) error {
	if cal.At.IsZero() {
		cal.At = s.opts.Now()
	}
	val, err := encodeJSON(cal)
	if err != nil {
		return err
	}
	return s.update("store calibration", func(tx *bolt.Tx) error {
		mr := getModelRecord(tx, id)
		calib := tx.Bucket(bucketCalibration)
		if mr.Calibration != nil && *mr.Calibration != cal.Validity {
			if err := calib.Delete(mr.Calibration.key()); err != nil {
				return err
			}
		}
		if err := calib.Put(cal.Validity.key(), val); err != nil {
			return err
		}
		v := cal.Validity
		mr.Calibration = &v
		return putModelRecord(tx, id, mr)
	})
}

// PutLearnedMisses stores what model id's latest misses cost with its
// calibration under v; without one stored under v it stores nothing
// (ErrNotFound): learned costs are only valid with the calibration.
func (s *Store) PutLearnedMisses(id string, v Validity, misses []time.Duration) error {
	return s.update("store learned costs", func(tx *bolt.Tx) error {
		calib := tx.Bucket(bucketCalibration)
		raw := calib.Get(v.key())
		if raw == nil {
			return fmt.Errorf("learned costs of %s: %w", id, ErrNotFound)
		}
		var cal Calibration
		if err := decodeJSON(raw, &cal); err != nil {
			return err
		}
		cal.LearnedMisses = slices.Clone(misses)
		val, err := encodeJSON(cal)
		if err != nil {
			return err
		}
		return calib.Put(v.key(), val)
	})
}

// ForgetCalibration removes what is stored for model id under v (a
// calibration cancelled by shutdown leaves no pending mark behind).
func (s *Store) ForgetCalibration(id string, v Validity) error {
	return s.update("forget calibration", func(tx *bolt.Tx) error {
		mr := getModelRecord(tx, id)
		if mr.Calibration == nil || *mr.Calibration != v {
			return nil
		}
		if err := tx.Bucket(bucketCalibration).Delete(v.key()); err != nil {
			return err
		}
		mr.Calibration = nil
		return putModelRecord(tx, id, mr)
	})
}
