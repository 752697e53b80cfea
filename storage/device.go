package storage

import (
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Facts about this device's storage, in the meta bucket under
// "read-rate/<device>" (a device number, so another disk is measured on
// its own): measured once, they spare every later start the measurement.

// ReadRate is a storage device's measured cold read rate.
type ReadRate struct {
	BytesPerSec float64   `json:"bytes_per_sec"`
	Bytes       int64     `json:"bytes"` // what the measurement read
	File        string    `json:"file"`
	Measured    time.Time `json:"measured"`
}

func readRateKey(device string) []byte { return []byte("read-rate/" + device) }

// ReadRate returns the read rate stored for device.
func (s *Store) ReadRate(device string) (ReadRate, bool) {
	var r ReadRate
	ok := false
	_ = s.view("read rate", func(tx *bolt.Tx) error {
		if raw := tx.Bucket(bucketMeta).Get(readRateKey(device)); raw != nil {
			if b, err := unseal(raw); err == nil && json.Unmarshal(b, &r) == nil && r.BytesPerSec > 0 {
				ok = true
			}
		}
		return nil
	})
	return r, ok
}

// PutReadRate stores device's read rate.
func (s *Store) PutReadRate(device string, r ReadRate) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.update("store read rate", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(readRateKey(device), seal(b))
	})
}
