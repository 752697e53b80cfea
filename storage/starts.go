package storage

import (
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The last starts' durations (process start → ready), in the meta bucket
// under "starts": the startup-duration distribution the metrics report.

// MaxStarts is how many starts are kept.
const MaxStarts = 20

var keyStarts = []byte("starts")

// RecordStart adds one start's duration and returns the kept ones, oldest
// first.
func (s *Store) RecordStart(d time.Duration) ([]time.Duration, error) {
	var kept []time.Duration
	err := s.update("record start", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if raw := b.Get(keyStarts); raw != nil {
			if v, err := unseal(raw); err == nil {
				_ = json.Unmarshal(v, &kept) // unreadable: start the list again
			}
		}
		kept = append(kept, d)
		if len(kept) > MaxStarts {
			kept = kept[len(kept)-MaxStarts:]
		}
		v, err := json.Marshal(kept)
		if err != nil {
			return err
		}
		return b.Put(keyStarts, seal(v))
	})
	return kept, err
}
