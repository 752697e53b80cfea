package storage

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A new state file is not initialized by bbolt (whose init syncs the file
// on the start's path): Open finds a whole empty database already there
// when it opens it, and the store works.
func TestNewStateFileIsNotInitializedByBolt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	orig := boltOpen
	t.Cleanup(func() { boltOpen = orig })
	var sizeAtOpen int64 = -1
	boltOpen = func(p string, mode os.FileMode, o *bolt.Options) (*bolt.DB, error) {
		if fi, err := os.Stat(p); err == nil {
			sizeAtOpen = fi.Size()
		}
		return orig(p, mode, o)
	}
	s, rep, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !rep.Created {
		t.Fatalf("report %+v", rep)
	}
	if sizeAtOpen < 4*int64(os.Getpagesize()) {
		t.Fatalf("bbolt opened a file of %d bytes: it initialized it itself", sizeAtOpen)
	}
	if _, _, err := s.Append("t", []byte("x")); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(path + ".new-*")
	if len(left) != 0 {
		t.Fatalf("left beside the state file: %v", left)
	}
}

// createEmpty never replaces a file that is there: a second agent that
// found no file at the same moment keeps the first one's state intact.
func TestCreateEmptyKeepsAnExistingFile(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Append("t", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A copy a crash left beside it is removed too.
	if err := os.WriteFile(path+".new-123", []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := createEmpty(path); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("existing state file changed (%v)", err)
	}
	if left, _ := filepath.Glob(path + ".new-*"); len(left) != 0 {
		t.Fatalf("left beside the state file: %v", left)
	}
	s, rep, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st, _ := s.OutboxStats(); rep.Created || st.Count != 1 {
		t.Fatalf("report %+v, outbox %+v", rep, st)
	}
}
