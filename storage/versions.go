package storage

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// Versions is what the agent knows of one model id's versions, stored in
// bucket "versions" under the id: the version serving, the one before it
// (what a rollback restores) and the updates it refused, so the same bytes
// are not tried again on every rescan.
type Versions struct {
	Current  string      `json:"current,omitempty"`  // sha256
	Previous string      `json:"previous,omitempty"` // sha256
	Rejected []Rejection `json:"rejected,omitempty"` // newest last, at most MaxRejections
}

// Rejection is one refused version.
type Rejection struct {
	SHA256 string    `json:"sha256"`
	Code   string    `json:"code"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// MaxRejections bounds the refused versions kept per model.
const MaxRejections = 8

// RejectedAs returns the rejection of sha256, if it was refused.
func (v Versions) RejectedAs(sha256 string) (Rejection, bool) {
	for _, r := range v.Rejected {
		if r.SHA256 == sha256 {
			return r, true
		}
	}
	return Rejection{}, false
}

// Reject records sha256 as refused (once; the oldest beyond MaxRejections
// are forgotten).
func (v *Versions) Reject(r Rejection) {
	out := v.Rejected[:0]
	for _, x := range v.Rejected {
		if x.SHA256 != r.SHA256 {
			out = append(out, x)
		}
	}
	v.Rejected = append(out, r)
	if n := len(v.Rejected); n > MaxRejections {
		v.Rejected = append([]Rejection{}, v.Rejected[n-MaxRejections:]...)
	}
}

// Forgive forgets a rejection of sha256 (a rollback to it, or an operator
// asking for it again).
func (v *Versions) Forgive(sha256 string) {
	out := v.Rejected[:0]
	for _, x := range v.Rejected {
		if x.SHA256 != sha256 {
			out = append(out, x)
		}
	}
	v.Rejected = out
}

// Versions returns what is stored for model id (zero when nothing is).
func (s *Store) Versions(id string) (Versions, error) {
	var v Versions
	err := s.view("read versions", func(tx *bolt.Tx) error {
		if raw := tx.Bucket(bucketVersions).Get([]byte(id)); raw != nil {
			return decodeJSON(raw, &v)
		}
		return nil
	})
	return v, err
}

// UpdateVersions changes model id's record with fn in one transaction.
func (s *Store) UpdateVersions(id string, fn func(*Versions)) error {
	return s.update("write versions", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVersions)
		var v Versions
		if raw := b.Get([]byte(id)); raw != nil {
			if err := decodeJSON(raw, &v); err != nil {
				return err
			}
		}
		fn(&v)
		raw, err := encodeJSON(v)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), raw)
	})
}
