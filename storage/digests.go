package storage

import bolt "go.etcd.io/bbolt"

// Bucket "digests": a file identity (the caller's key, e.g. device, inode,
// size and times) → the file's sha256, so a restart does not hash every
// model again.

// LookupDigest returns the digest stored under key.
func (s *Store) LookupDigest(key string) (string, bool) {
	var d string
	_ = s.view("read digest", func(tx *bolt.Tx) error {
		if raw := tx.Bucket(bucketDigests).Get([]byte(key)); raw != nil {
			if b, err := unseal(raw); err == nil {
				d = string(b)
			}
		}
		return nil
	})
	return d, d != ""
}

// StoreDigest stores digest under key.
func (s *Store) StoreDigest(key, digest string) error {
	return s.update("store digest", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDigests).Put([]byte(key), seal([]byte(digest)))
	})
}

// StoreDigests stores several digests in one write (one commit, one
// fsync): a cache written behind the work that learned them.
func (s *Store) StoreDigests(kv map[string]string) error {
	if len(kv) == 0 {
		return nil
	}
	return s.update("store digests", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDigests)
		for k, d := range kv {
			if err := b.Put([]byte(k), seal([]byte(d))); err != nil {
				return err
			}
		}
		return nil
	})
}
