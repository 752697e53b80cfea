package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// createEmpty puts a new state file at path, at the current schema and
// empty, written but not synced. bbolt syncs a file it initializes, and
// again when the schema's buckets first grow it: 2–3 ms at a first start
// here, 20 ms when the disk had other writes pending (ext4 commits them
// with the sync), on the start's path. Here bbolt builds the file in
// memory (a memfd); its bytes are written beside path and linked in
// place, and the next commit's sync makes them durable. A crash before
// then leaves no file or an empty or damaged one (moved aside and
// replaced, as any damaged file is): an empty state in every case, which
// is what it was. A file someone else created meanwhile is kept (link,
// not rename); copies a crash left beside path are removed.
func createEmpty(path string) error {
	if old, err := filepath.Glob(path + ".new-*"); err == nil {
		for _, f := range old {
			_ = os.Remove(f)
		}
	}
	img, err := emptyImage(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(img); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// createEmptyOrLeave is createEmpty; when it fails (no memfd), bbolt
// creates the file, with its sync: slower, as safe.
func createEmptyOrLeave(path string, o Options) {
	if err := createEmpty(path); err != nil {
		o.Logger.Debug("state file not created unsynced; bbolt creates it", "path", path, "err", err)
	}
}

// emptyImage is the file bbolt writes for a new database at the current
// schema, built on a memfd (path names it in errors only).
func emptyImage(path string) ([]byte, error) {
	fd, err := unix.MemfdCreate("edge-agent-state", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		OpenFile: func(string, int, os.FileMode) (*os.File, error) { return f, nil },
	})
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	defer func() { _ = db.Close() }() // closes f; the image is read by then
	// Migrated here too: the schema's buckets grow the file, and bbolt
	// syncs a file it grows (its NoGrowSync aside), 1 ms here and 20 ms
	// at worst on the start's path.
	if _, err := (&Store{db: db}).migrate(); err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	img := make([]byte, fi.Size())
	if _, err := f.ReadAt(img, 0); err != nil {
		return nil, err
	}
	return img, nil
}
