package storage

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DelegateState is where trying a delegate for a model got to.
type DelegateState string

const (
	// Attempting is written (and synced) before the delegate is tried. Found
	// on start, it means the process died inside the delegate.
	Attempting DelegateState = "attempt"
	Worked     DelegateState = "ok"
	Failed     DelegateState = "failed"  // an error; retried only on a new key or command
	Crashed    DelegateState = "crashed" // never tried again for this key
)

// DelegateRecord is the outcome of one delegate for one model key, stored in
// bucket "delegates" under the Validity (whose Options name the delegate).
type DelegateRecord struct {
	Model    string        `json:"model"` // model id
	Validity Validity      `json:"validity"`
	Delegate string        `json:"delegate"`
	State    DelegateState `json:"state"`
	Reason   string        `json:"reason,omitempty"`
	Attempts int           `json:"attempts"`
	At       time.Time     `json:"at"`
}

// Delegate returns what is known of delegate name for model id under v:
// Restored with the record, Invalidated when only another key has one
// (changed model, runtime or board), or New.
func (s *Store) Delegate(id, name string, v Validity) (DelegateRecord, Lookup, error) {
	var rec DelegateRecord
	look := Lookup{Status: New}
	err := s.view("read delegate state", func(tx *bolt.Tx) error {
		if raw := tx.Bucket(bucketDelegates).Get(v.key()); raw != nil {
			look = Lookup{Status: Restored}
			return decodeJSON(raw, &rec)
		}
		if old, ok := getModelRecord(tx, id).Delegates[name]; ok {
			look = invalidated(old, v)
		}
		return nil
	})
	return rec, look, err
}

// BeginDelegateAttempt records that delegate is about to be tried; the
// write is durable before it returns.
func (s *Store) BeginDelegateAttempt(model, delegate string, v Validity) error {
	return s.putDelegate(model, delegate, v, Attempting, "")
}

// EndDelegateAttempt records the outcome: Worked when err is nil.
func (s *Store) EndDelegateAttempt(model, delegate string, v Validity, err error) error {
	if err != nil {
		return s.putDelegate(model, delegate, v, Failed, err.Error())
	}
	return s.putDelegate(model, delegate, v, Worked, "")
}

// ResetDelegate forgets the outcome, so a failed or crashed delegate is
// tried again (an explicit operator command).
func (s *Store) ResetDelegate(v Validity) error {
	return s.update("reset delegate", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDelegates).Delete(v.key())
	})
}

func (s *Store) putDelegate(model, delegate string, v Validity, st DelegateState, reason string) error {
	return s.update(fmt.Sprintf("record delegate %s %s", delegate, st), func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDelegates)
		rec := DelegateRecord{Model: model, Validity: v, Delegate: delegate}
		if raw := b.Get(v.key()); raw != nil {
			_ = decodeJSON(raw, &rec) // attempts carry over; a damaged record restarts at 0
		}
		rec.State, rec.Reason, rec.At = st, reason, s.opts.Now()
		if st == Attempting {
			rec.Attempts++
		}
		val, err := encodeJSON(rec)
		if err != nil {
			return err
		}
		if err := b.Put(v.key(), val); err != nil {
			return err
		}
		mr := getModelRecord(tx, model)
		if old, ok := mr.Delegates[delegate]; ok && old == v {
			return nil
		} else if ok {
			if err := b.Delete(old.key()); err != nil { // facts for a stale key go
				return err
			}
		}
		if mr.Delegates == nil {
			mr.Delegates = map[string]Validity{}
		}
		mr.Delegates[delegate] = v
		return putModelRecord(tx, model, mr)
	})
}

// markCrashedAttempts turns every unfinished attempt into Crashed. A
// start with none writes nothing (no commit, no fsync on the start path).
func (s *Store) markCrashedAttempts() ([]DelegateRecord, error) {
	attempting := false
	if err := s.view("find unfinished delegate attempts", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDelegates).ForEach(func(_, v []byte) error {
			var r DelegateRecord
			if err := decodeJSON(v, &r); err != nil {
				return err
			}
			attempting = attempting || r.State == Attempting
			return nil
		})
	}); err != nil || !attempting {
		return nil, err
	}
	var crashed []DelegateRecord
	err := s.update("mark crashed delegates", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDelegates)
		type kv struct {
			k []byte
			r DelegateRecord
		}
		var found []kv
		if err := b.ForEach(func(k, v []byte) error {
			var r DelegateRecord
			if err := decodeJSON(v, &r); err != nil {
				return err
			}
			if r.State == Attempting {
				found = append(found, kv{append([]byte{}, k...), r})
			}
			return nil
		}); err != nil {
			return err
		}
		for _, f := range found {
			f.r.State = Crashed
			f.r.Reason = "the process died during the attempt"
			f.r.At = s.opts.Now()
			val, err := encodeJSON(f.r)
			if err != nil {
				return err
			}
			if err := b.Put(f.k, val); err != nil {
				return err
			}
			crashed = append(crashed, f.r)
		}
		return nil
	})
	return crashed, err
}
