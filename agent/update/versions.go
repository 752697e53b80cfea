package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// Model versions are kept under the state dir, one file per version the
// agent serves: versions/<id>/<sha256>.tflite. The pool maps that file,
// not the configured path, so a deployment tool rewriting the path in
// place cannot change a mapped model under a running interpreter, and the
// previous version is still there for a rollback.

// VersionFile is where version digest of model id is kept.
func (m *Manager) VersionFile(id, digest string) string {
	return filepath.Join(m.settings().StateDir, "versions", id, digest+".tflite")
}

// Pin keeps the bytes of model id's version digest, read from
// path: a copy up to updates.keep_previous_bytes, a hard link beyond (same
// file system), and returns the kept file. When neither is possible, or
// path no longer has that content, it returns path itself: served from
// there, that version cannot be rolled back to.
func (m *Manager) Pin(id, path, digest string) string { return m.pin(id, path, digest, true) }

// PinUnsynced is Pin with a copy not synced yet: a start serves from it at
// once, and syncs it (SyncKept) before the versions record names it, off
// a first answer's path.
func (m *Manager) PinUnsynced(id, path, digest string) string { return m.pin(id, path, digest, false) }

// Kept reports whether model id's version digest is kept already (hashed
// once per file identity: a kept file seen before is not read again).
func (m *Manager) Kept(id, digest string) bool {
	return m.kept(m.VersionFile(id, digest), digest)
}

func (m *Manager) kept(dst, digest string) bool {
	d, _, err := tflite.Digest(dst, m.o.Facts())
	return err == nil && d == digest
}

func (m *Manager) pin(id, path, digest string, durable bool) string {
	dst := m.VersionFile(id, digest)
	if m.kept(dst, digest) {
		return dst
	}
	// When path's identity is the one digest was hashed for, the copy is
	// not hashed again: an identity unchanged across the copy (inode,
	// size, mtime and ctime in ns) means the same bytes, as the digest
	// cache already holds. Hashing again cost ~2-3 ms per 3.6 MB model on
	// a first request's path. Otherwise the copy is hashed as it is made.
	before, statErr := tflite.StatID(path)
	cachedDigest := ""
	if statErr == nil {
		cachedDigest, _ = m.o.Facts().LookupDigest(before)
	}
	trusted := cachedDigest == digest
	copied, err := m.keepCopy(path, dst, durable, !trusted)
	if err != nil {
		m.log.Warn("model version not kept: served from its path, no rollback to it", "model", id, "err", err)
		return path
	}
	if trusted {
		if after, err := tflite.StatID(path); err == nil && after == before {
			copied = digest
		}
	}
	if copied == digest {
		// Hashed (or known) while copied: the copy is not read again.
		if fid, err := tflite.StatID(dst); err == nil {
			_ = m.o.Facts().StoreDigest(fid, copied) // a cache
		}
	}
	if !m.kept(dst, digest) {
		// The path changed between hashing and copying: the next rescan
		// sees the new content.
		_ = os.Remove(dst)
		return path
	}
	return dst
}

// SyncKept makes a kept copy durable (PinUnsynced).
func SyncKept(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// keepCopy makes dst hold path's bytes: a copy when small enough (its
// digest returned when hashed, synced when durable), else a hard link. The
// file appears whole (written aside, then renamed).
func (m *Manager) keepCopy(path, dst string, durable, hashed bool) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	tmp := dst + ".tmp"
	_ = os.Remove(tmp)
	if fi.Size() > m.settings().KeepPreviousBytes {
		if err := os.Link(path, tmp); err != nil {
			return "", fmt.Errorf("%d bytes is over updates.keep_previous_bytes and a hard link failed: %w", fi.Size(), err)
		}
		return "", os.Rename(tmp, dst)
	}
	digest, err := copyFile(path, tmp, durable, hashed)
	if err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	return digest, os.Rename(tmp, dst)
}

// copyFile copies src to dst (synced when durable) and, with hashed,
// returns the hex sha256 of the bytes copied. Without, the kernel copies
// (copy_file_range) and no byte passes through the process.
func copyFile(src, dst string, durable, hashed bool) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", err
	}
	var h hash.Hash
	if hashed {
		h = sha256.New()
		_, err = io.Copy(io.MultiWriter(out, h), in)
	} else {
		_, err = io.Copy(out, in)
	}
	if err != nil {
		_ = out.Close()
		return "", err
	}
	if durable {
		if err := out.Sync(); err != nil {
			_ = out.Close()
			return "", err
		}
	}
	if h == nil {
		return "", out.Close()
	}
	return hex.EncodeToString(h.Sum(nil)), out.Close()
}

// pruneVersions removes the kept files of model id other than keep.
func (m *Manager) pruneVersions(id string, keep ...string) {
	if len(keep) == 0 || keep[0] == "" {
		return // nothing known to keep: keep everything
	}
	dir := filepath.Join(m.settings().StateDir, "versions", id)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		digest, ok := strings.CutSuffix(e.Name(), ".tflite")
		if !ok || !slices.Contains(keep, digest) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				m.log.Warn("old model version not removed", "model", id, "err", err)
			}
		}
	}
}

// KeepLater is NoteServing for a model a start serves from the copy it
// made unsynced (source; path is the configured file): the copy's fsync
// and the record run on an owned goroutine, after the model serves, as a
// first answer needs neither. An update or rollback of id waits for them.
func (m *Manager) KeepLater(id, digest, source, path string) {
	m.keeps.keep(func(f func(context.Context)) { m.o.Spawn(m.o.RunCtx(), f) }, id, func() {
		if source != path {
			if err := SyncKept(source); err != nil {
				m.log.Warn("model version copy not synced", "model", id, "err", err)
			}
		}
		m.NoteServing(id, digest)
	})
}

// NoteServing records that version digest serves model id (at start: the
// file may have changed while the agent was down) and drops kept versions
// other than it and the one before.
func (m *Manager) NoteServing(id, digest string) {
	v, err := m.store().Versions(id)
	if err == nil && v.Current == digest {
		// The usual start: nothing new to write (no fsync per model).
		m.pruneVersions(id, v.Current, v.Previous)
		return
	}
	var keep []string
	m.recordVersions(id, func(v *storage.Versions) {
		if v.Current != digest {
			if v.Current != "" {
				v.Previous = v.Current
			}
			v.Current = digest
		}
		keep = []string{v.Current, v.Previous}
	})
	m.pruneVersions(id, keep...)
}
