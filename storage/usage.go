package storage

import (
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// HoursPerWeek is the resolution of usage history.
const HoursPerWeek = 7 * 24

// Usage is one model's demand per hour of the week (Monday 00:00 UTC is
// hour 0), decayed with the store's half-life so old habits fade. Stored in
// bucket "usage" under the model id.
type Usage struct {
	Counts  [HoursPerWeek]float64 `json:"counts"`
	Updated time.Time             `json:"updated"`
}

// HourOfWeek maps t to 0..167.
func HourOfWeek(t time.Time) int {
	t = t.UTC()
	return (int(t.Weekday())+6)%7*24 + t.Hour()
}

func (u *Usage) decayTo(now time.Time, halfLife time.Duration) {
	if u.Updated.IsZero() || !now.After(u.Updated) {
		if u.Updated.IsZero() {
			u.Updated = now
		}
		return
	}
	f := math.Exp2(-float64(now.Sub(u.Updated)) / float64(halfLife))
	for i := range u.Counts {
		u.Counts[i] *= f
	}
	u.Updated = now
}

// Expected is the decayed demand in the hour of week containing at.
func (u Usage) Expected(at, now time.Time, halfLife time.Duration) float64 {
	u.decayTo(now, halfLife)
	return u.Counts[HourOfWeek(at)]
}

// UsageHalfLife is how fast the store lets old demand fade.
func (s *Store) UsageHalfLife() time.Duration { return s.opts.UsageHalfLife }

// UsageEvent is n requests to a model at a time.
type UsageEvent struct {
	Model string
	At    time.Time
	N     float64
}

// AddUsage records a batch of requests in one transaction; callers batch
// so each request does not cost a synced write.
func (s *Store) AddUsage(events []UsageEvent) error {
	if len(events) == 0 {
		return nil
	}
	now := s.opts.Now()
	return s.update("record usage", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsage)
		byModel := map[string]*Usage{}
		for _, e := range events {
			u := byModel[e.Model]
			if u == nil {
				u = &Usage{}
				if raw := b.Get([]byte(e.Model)); raw != nil {
					_ = decodeJSON(raw, u) // a damaged history starts over
				}
				u.decayTo(now, s.opts.UsageHalfLife)
				byModel[e.Model] = u
			}
			u.Counts[HourOfWeek(e.At)] += e.N
		}
		for id, u := range byModel {
			val, err := encodeJSON(u)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(id), val); err != nil {
				return err
			}
		}
		return nil
	})
}

// Usage returns every model's history, decayed to now.
func (s *Store) Usage() (map[string]Usage, error) {
	out := map[string]Usage{}
	now := s.opts.Now()
	err := s.view("read usage", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsage).ForEach(func(k, v []byte) error {
			var u Usage
			if err := decodeJSON(v, &u); err != nil {
				return err
			}
			u.decayTo(now, s.opts.UsageHalfLife)
			out[string(k)] = u
			return nil
		})
	})
	return out, err
}
