package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the state file inside the state directory.
const FileName = "edge-agent.db"

// Bucket names. Keys and values are documented where each bucket is used.
var (
	bucketMeta        = []byte("meta")
	bucketModels      = []byte("models")
	bucketCalibration = []byte("calibration")
	bucketDelegates   = []byte("delegates")
	bucketUsage       = []byte("usage")
	bucketOutbox      = []byte("outbox")
	bucketDigests     = []byte("digests")
	bucketVersions    = []byte("versions")

	keySchema        = []byte("schema")
	keyOutboxCount   = []byte("outbox_count")
	keyOutboxBytes   = []byte("outbox_bytes")
	keyOutboxDropped = []byte("outbox_dropped")
)

// migrations bring a file from schema i to i+1, in order; the schema version
// is len(migrations). Append, never edit.
var migrations = []func(tx *bolt.Tx) error{
	// 0 → 1: the initial buckets.
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketModels, bucketCalibration, bucketDelegates, bucketUsage, bucketOutbox, bucketDigests} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 1 → 2: model versions (current, previous, rejected updates).
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketVersions)
		return err
	},
}

// SchemaVersion is the schema this build writes.
var SchemaVersion = uint64(len(migrations))

// Options configure a Store. The zero value means the documented defaults.
type Options struct {
	// LockTimeout bounds the wait for the file lock, so a restarted unit
	// never hangs behind a dying one. Default 3s.
	LockTimeout time.Duration
	// OutboxMaxCount and OutboxMaxBytes bound the telemetry outbox; the
	// oldest messages are dropped first. Defaults 10000 and 8 MiB.
	OutboxMaxCount int
	OutboxMaxBytes int64
	// UsageHalfLife is how fast old demand fades. Default 14 days.
	UsageHalfLife time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
	// OpenRetries is how often a failed open that is not corruption (no
	// memory to map, no file descriptors, a full or read-only disk) is
	// tried again, with a doubling pause from RetryPause. Default 3 and
	// 200ms. Such a failure never moves the file aside.
	OpenRetries int
	RetryPause  time.Duration
}

func (o *Options) defaults() {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 3 * time.Second
	}
	if o.OutboxMaxCount <= 0 {
		o.OutboxMaxCount = 10000
	}
	if o.OutboxMaxBytes <= 0 {
		o.OutboxMaxBytes = 8 << 20
	}
	if o.UsageHalfLife <= 0 {
		o.UsageHalfLife = 14 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OpenRetries <= 0 {
		o.OpenRetries = 3
	}
	if o.RetryPause <= 0 {
		o.RetryPause = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// OpenReport says what happened while opening.
type OpenReport struct {
	Path string `json:"path"`
	// Created is true when no file existed (or a corrupt one was replaced).
	Created bool `json:"created"`
	// MigratedFrom is the schema the file had, when it was migrated.
	MigratedFrom uint64 `json:"migrated_from,omitempty"`
	// Corruption is set when a damaged file was moved aside.
	Corruption *Corruption `json:"corruption,omitempty"`
	// Crashed lists delegate attempts that never finished: the process died
	// inside them. They are now marked crashed and will not be tried again.
	Crashed []DelegateRecord `json:"crashed_delegates,omitempty"`
}

// Corruption describes a state file that failed verification.
type Corruption struct {
	MovedTo string `json:"moved_to"`
	Reason  string `json:"reason"`
}

// Store is the open state file. Safe for concurrent use.
type Store struct {
	db   *bolt.DB
	opts Options
}

// Open opens (or creates) the state file in dir. A corrupt file is moved
// aside and replaced; a newer schema or a held lock is an error.
func Open(dir string, o Options) (*Store, OpenReport, error) {
	o.defaults()
	path := filepath.Join(dir, FileName)
	rep := OpenReport{Path: path}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, rep, fmt.Errorf("state dir: %w", err)
	}
	_, statErr := os.Stat(path)
	rep.Created = errors.Is(statErr, fs.ErrNotExist)
	if rep.Created {
		createEmptyOrLeave(path, o)
	}
	db, err := openRetrying(path, o)
	if errors.Is(err, ErrCorrupt) {
		moved := fmt.Sprintf("%s.corrupt-%s", path, o.Now().UTC().Format("20060102T150405.000000000"))
		if rerr := os.Rename(path, moved); rerr != nil {
			return nil, rep, fmt.Errorf("move corrupt state file aside: %w (after: %v)", rerr, err)
		}
		o.Logger.Error("state file corrupt, moved aside", "path", path, "moved_to", moved, "err", err)
		rep.Corruption = &Corruption{MovedTo: moved, Reason: err.Error()}
		rep.Created = true
		createEmptyOrLeave(path, o)
		db, err = openVerified(path, o)
	}
	if err != nil {
		return nil, rep, err
	}
	s := &Store{db: db, opts: o}
	// A new state file's schema is not worth an fsync on the start's path:
	// the next write's sync makes it durable. A crash before that loses
	// only an empty file: the older meta page is used (migrated again), or
	// the file is found corrupt and replaced, as any damaged one is.
	db.NoSync = rep.Created
	from, err := s.migrate()
	db.NoSync = false
	if err != nil {
		_ = db.Close()
		return nil, rep, err
	}
	if from != SchemaVersion && !rep.Created {
		rep.MigratedFrom = from
	}
	if rep.Crashed, err = s.markCrashedAttempts(); err != nil {
		_ = db.Close()
		return nil, rep, err
	}
	return s, rep, nil
}

// openRetrying is openVerified, tried again while it fails for a reason of
// the environment: those pass (memory, descriptors, disk space), and the
// file they failed on is fine.
func openRetrying(path string, o Options) (*bolt.DB, error) {
	pause := o.RetryPause
	for try := 0; ; try++ {
		db, err := openVerified(path, o)
		if err == nil || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrLocked) || try >= o.OpenRetries {
			return db, err
		}
		o.Logger.Warn("state file not opened; trying again (the file is kept)", "path", path, "err", err, "retry_in", pause)
		time.Sleep(pause)
		pause *= 2
	}
}

// boltOpen is bolt.Open; tests replace it to inject the environment's
// failures (ENOMEM from mmap cannot be caused on demand).
var boltOpen = bolt.Open

// openVerified opens path and checks it through; ErrCorrupt means the file
// exists and is damaged. Only bbolt's own verdicts on the file (bad magic,
// version, checksum, mapping) and our checks count as damage: any other
// failure (ENOMEM from mmap, EMFILE, EACCES, ENOSPC, EIO) is the
// environment's, and moving the state aside for it would lose what the
// device learned.
func openVerified(path string, o Options) (*bolt.DB, error) {
	if err := precheck(path); err != nil {
		return nil, err
	}
	db, err := boltOpen(path, 0o600, &bolt.Options{Timeout: o.LockTimeout, FreelistType: bolt.FreelistMapType})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s (waited %v)", ErrLocked, path, o.LockTimeout)
	case err != nil && isCorruption(err):
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	case err != nil:
		return nil, fmt.Errorf("open state file: %w", err)
	}
	if err := verify(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// isCorruption tells damage in the file from a problem of the environment.
func isCorruption(err error) bool {
	for _, e := range []error{berrors.ErrInvalid, berrors.ErrVersionMismatch, berrors.ErrChecksum,
		berrors.ErrInvalidMapping, io.ErrUnexpectedEOF} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// bbolt's on-disk meta page, as far as the size check needs it.
const (
	pageHeaderSize = 16
	metaMagic      = 0xED0CDAED
)

// precheck refuses a file shorter than its own meta pages say: bbolt would
// map pages past the end and the first read of them kills the process
// (SIGBUS) instead of failing.
func precheck(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open state file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat state file: %w", err)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("%w: empty file", ErrCorrupt)
	}
	head := make([]byte, 64<<10)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return fmt.Errorf("read state file: %w", err)
	}
	head = head[:n]
	var best *metaPage
	for _, off := range metaOffsets(head) {
		if m, ok := parseMeta(head, off); ok && (best == nil || m.txid > best.txid) {
			best = &m
		}
	}
	if best == nil {
		return fmt.Errorf("%w: no valid meta page", ErrCorrupt)
	}
	if need := int64(best.pgid) * int64(best.pageSize); need > fi.Size() {
		return fmt.Errorf("%w: truncated: %d bytes, meta page says %d", ErrCorrupt, fi.Size(), need)
	}
	return nil
}

type metaPage struct {
	pageSize   uint32
	pgid, txid uint64
}

func metaOffsets(head []byte) []int {
	offs := []int{0}
	if len(head) >= pageHeaderSize+12 && binary.LittleEndian.Uint32(head[pageHeaderSize:]) == metaMagic {
		offs = append(offs, int(binary.LittleEndian.Uint32(head[pageHeaderSize+8:])))
	}
	return offs
}

func parseMeta(head []byte, pageOff int) (metaPage, bool) {
	m := pageOff + pageHeaderSize
	if pageOff < 0 || m+64 > len(head) {
		return metaPage{}, false
	}
	b := head[m : m+64]
	if binary.LittleEndian.Uint32(b[0:]) != metaMagic {
		return metaPage{}, false
	}
	h := fnv.New64a()
	h.Write(b[:56])
	if h.Sum64() != binary.LittleEndian.Uint64(b[56:]) {
		return metaPage{}, false
	}
	return metaPage{pageSize: binary.LittleEndian.Uint32(b[8:]), pgid: binary.LittleEndian.Uint64(b[40:]), txid: binary.LittleEndian.Uint64(b[48:])}, true
}

// verify walks every record (checking its CRC) and runs bbolt's own
// consistency check. Faults in the mapping become errors, not crashes.
func verify(db *bolt.DB) (err error) {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("%w: %v", ErrCorrupt, r)
			}
		}()
		done <- db.View(func(tx *bolt.Tx) error {
			if err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				return b.ForEach(func(k, v []byte) error {
					if v == nil || string(name) == string(bucketMeta) {
						return nil
					}
					if _, err := unseal(v); err != nil {
						return fmt.Errorf("bucket %s key %x: %w", name, k, err)
					}
					return nil
				})
			}); err != nil {
				return err
			}
			var errs []error
			for e := range tx.Check() {
				errs = append(errs, e)
			}
			if len(errs) > 0 {
				return fmt.Errorf("%w: %v", ErrCorrupt, errors.Join(errs...))
			}
			return nil
		})
	}()
	return <-done
}

// migrate brings the file to SchemaVersion and returns the version it had.
// A newer file is refused before anything is written.
func (s *Store) migrate() (uint64, error) {
	var have uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketMeta); b != nil {
			if v := b.Get(keySchema); len(v) == 8 {
				have = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	}); err != nil {
		return 0, err
	}
	if have > SchemaVersion {
		return have, fmt.Errorf("%w: %s has schema %d, this edge-agent reads up to %d (left untouched)", ErrSchemaTooNew, s.db.Path(), have, SchemaVersion)
	}
	if have == SchemaVersion {
		return have, nil
	}
	return have, s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		for v := have; v < SchemaVersion; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migrate schema %d→%d: %w", v, v+1, err)
			}
		}
		return meta.Put(keySchema, u64(SchemaVersion))
	})
}

// Path is the state file's path.
func (s *Store) Path() string { return s.db.Path() }

// Close closes the file; later calls fail with ErrClosed.
func (s *Store) Close() error { return s.db.Close() }

// update runs fn in a write transaction, wrapping errors with op.
func (s *Store) update(op string, fn func(tx *bolt.Tx) error) error {
	if err := s.db.Update(fn); err != nil {
		if errors.Is(err, berrors.ErrDatabaseNotOpen) {
			err = ErrClosed
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (s *Store) view(op string, fn func(tx *bolt.Tx) error) error {
	if err := s.db.View(fn); err != nil {
		if errors.Is(err, berrors.ErrDatabaseNotOpen) {
			err = ErrClosed
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}
