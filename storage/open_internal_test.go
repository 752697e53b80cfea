package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// A failure of the environment while opening (no memory for the mapping,
// no descriptors, a full or read-only disk, an I/O error) is reported and
// retried; it never moves the state file aside, and the state is all there
// once the environment recovers.
func TestEnvironmentErrorsKeepTheStateFile(t *testing.T) {
	cases := []struct {
		name string
		err  error
	}{
		// bbolt returns mmap's errno as it is.
		{"ENOMEM from mmap", syscall.ENOMEM},
		{"EMFILE", &fs.PathError{Op: "open", Path: "edge-agent.db", Err: syscall.EMFILE}},
		{"ENFILE", &fs.PathError{Op: "open", Path: "edge-agent.db", Err: syscall.ENFILE}},
		{"EACCES", &fs.PathError{Op: "open", Path: "edge-agent.db", Err: syscall.EACCES}},
		{"ENOSPC", fmt.Errorf("init: %w", syscall.ENOSPC)},
		{"EIO", fmt.Errorf("read meta: %w", syscall.EIO)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Append("t", []byte("learned")); err != nil {
				t.Fatal(err)
			}
			s.Close()

			calls := 0
			boltOpen = func(string, fs.FileMode, *bolt.Options) (*bolt.DB, error) {
				calls++
				return nil, c.err
			}
			defer func() { boltOpen = bolt.Open }()
			o := Options{OpenRetries: 2, RetryPause: time.Millisecond}
			if _, _, err := Open(dir, o); err == nil || errors.Is(err, ErrCorrupt) || !errors.Is(err, c.err) {
				t.Fatalf("open: %v, want the environment's error, not corruption", err)
			}
			if calls != 3 {
				t.Fatalf("%d attempts, want 1 + 2 retries", calls)
			}
			if m, _ := filepath.Glob(filepath.Join(dir, FileName+".corrupt-*")); len(m) != 0 {
				t.Fatalf("state moved aside: %v", m)
			}
			if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
				t.Fatal(err)
			}

			// A passing failure: the retry opens the same file.
			calls = 0
			boltOpen = func(path string, mode fs.FileMode, bo *bolt.Options) (*bolt.DB, error) {
				if calls++; calls == 1 {
					return nil, c.err
				}
				return bolt.Open(path, mode, bo)
			}
			s, rep, err := Open(dir, o)
			if err != nil {
				t.Fatalf("open after the environment recovered: %v", err)
			}
			defer s.Close()
			msgs, err := s.Pending(0, 10)
			if err != nil || len(msgs) != 1 || string(msgs[0].Payload) != "learned" || rep.Created || rep.Corruption != nil {
				t.Fatalf("state after recovery: %v %v %+v", msgs, err, rep)
			}
		})
	}
}

// bbolt's own verdicts on the file are corruption: moved aside at once,
// without retries, and a fresh file takes its place.
func TestBoltCorruptionVerdictsMoveAside(t *testing.T) {
	for _, verdict := range []error{berrors.ErrChecksum, berrors.ErrInvalid, berrors.ErrVersionMismatch} {
		dir := t.TempDir()
		s, _, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		calls := 0
		boltOpen = func(path string, mode fs.FileMode, bo *bolt.Options) (*bolt.DB, error) {
			if calls++; calls == 1 {
				return nil, verdict
			}
			return bolt.Open(path, mode, bo)
		}
		s, rep, err := Open(dir, Options{OpenRetries: 3, RetryPause: time.Millisecond})
		boltOpen = bolt.Open
		if err != nil {
			t.Fatalf("%v: %v", verdict, err)
		}
		s.Close()
		if rep.Corruption == nil || !rep.Created || calls != 2 {
			t.Fatalf("%v: report %+v after %d opens, want moved aside and created", verdict, rep, calls)
		}
	}
}
