package update

import (
	"errors"
	"fmt"
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
func (m *Manager) Pin(id, path, digest string) string {
	dst := m.VersionFile(id, digest)
	if d, _, err := tflite.Digest(dst, m.o.Facts()); err == nil && d == digest {
		return dst
	}
	if err := m.keepCopy(path, dst); err != nil {
		m.log.Warn("model version not kept: served from its path, no rollback to it", "model", id, "err", err)
		return path
	}
	if d, _, err := tflite.Digest(dst, m.o.Facts()); err != nil || d != digest {
		// The path changed between hashing and copying: the next rescan
		// sees the new content.
		_ = os.Remove(dst)
		return path
	}
	return dst
}

// keepCopy makes dst hold path's bytes: a copy when small enough, else a
// hard link. The file appears whole (written aside, then renamed).
func (m *Manager) keepCopy(path, dst string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	_ = os.Remove(tmp)
	if fi.Size() > m.settings().KeepPreviousBytes {
		if err := os.Link(path, tmp); err != nil {
			return fmt.Errorf("%d bytes is over updates.keep_previous_bytes and a hard link failed: %w", fi.Size(), err)
		}
		return os.Rename(tmp, dst)
	}
	if err := copyFile(path, tmp); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
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
