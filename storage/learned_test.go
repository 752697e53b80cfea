package storage_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/storage"
)

// Learned miss costs live with the calibration they were learned under:
// stored, reopened and read back with it; refused without it; gone with a
// recalibration under another key.
func TestLearnedMissesWithTheCalibration(t *testing.T) {
	dir := t.TempDir()
	s, _, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := storage.Validity{Model: "sha-a", Runtime: "2.14.1", Hardware: "hw-1", Options: "threads=2"}
	misses := []time.Duration{30 * time.Millisecond, 45 * time.Millisecond, 41 * time.Millisecond}
	if err := s.PutLearnedMisses("m", v, misses); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("learned costs with no calibration: %v, want ErrNotFound", err)
	}
	if err := s.PutCalibration("m", storage.Calibration{Validity: v, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutLearnedMisses("m", v, misses); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, _ = mustOpen(t, dir, storage.Options{})
	got, look, err := s.Calibration("m", v)
	if err != nil || look.Status != storage.Restored || got.Threads != 2 || !slices.Equal(got.LearnedMisses, misses) {
		t.Fatalf("after reopening: %+v %+v %v, want the learned misses %v", got, look, err, misses)
	}
	v2 := v
	v2.Runtime = "2.16.1"
	if err := s.PutCalibration("m", storage.Calibration{Validity: v2, Threads: 4}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Calibration("m", v2); len(got.LearnedMisses) != 0 {
		t.Fatalf("a new runtime's calibration carries %v learned under the old one", got.LearnedMisses)
	}
}
