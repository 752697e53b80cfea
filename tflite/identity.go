package tflite

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// FileID identifies one version of a file without reading it: a change of
// content through any ordinary write changes size, mtime or ctime, and a
// replaced file changes the inode.
type FileID struct {
	Dev, Ino uint64
	Size     int64
	MtimeNs  int64
	CtimeNs  int64
}

// StatID returns path's FileID.
func StatID(path string) (FileID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return FileID{}, fmt.Errorf("stat %q: %w", path, err)
	}
	return FileID{
		Dev:     uint64(st.Dev),
		Ino:     uint64(st.Ino),
		Size:    st.Size,
		MtimeNs: st.Mtim.Nano(),
		CtimeNs: st.Ctim.Nano(),
	}, nil
}

// hashChunk is how much is hashed between two calls of DigestPaced's
// yield: ~60 µs of sha256 here.
const hashChunk = 128 << 10

// hashChunked is the sha256 of r, calling yield between chunks.
func hashChunked(r io.Reader, yield func()) ([]byte, error) {
	h := sha256.New()
	buf := make([]byte, hashChunk)
	for {
		n, err := io.ReadFull(r, buf)
		h.Write(buf[:n])
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return h.Sum(nil), nil
		case err != nil:
			return nil, err
		}
		yield()
	}
}

// DigestCache remembers digests by file identity so a warm restart does not
// hash every model again. storage implements it persistently.
type DigestCache interface {
	LookupDigest(FileID) (string, bool)
	StoreDigest(FileID, string) error
}

// MemDigestCache is a DigestCache for one process.
type MemDigestCache struct {
	// mu guards m.
	mu sync.Mutex
	m  map[FileID]string
}

func (c *MemDigestCache) LookupDigest(id FileID) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.m[id]
	return d, ok
}

func (c *MemDigestCache) StoreDigest(id FileID, d string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[FileID]string)
	}
	c.m[id] = d
	return nil
}

// Digest returns the hex sha256 of the file at path, from cache when the
// file's identity is unchanged. A nil cache always hashes. The second result
// says whether the digest came from the cache.
func Digest(path string, cache DigestCache) (string, bool, error) {
	return DigestPaced(path, cache, func() {})
}

// DigestPaced is Digest calling yield between the chunks it hashes. Go
// lets a goroutine in pure Go keep its core for up to 10 ms; a caller
// that hashes a large file beside more urgent work waits in yield (the
// agent: while a small model's registration or load runs).
func DigestPaced(path string, cache DigestCache, yield func()) (string, bool, error) {
	id, err := StatID(path)
	if err != nil {
		return "", false, err
	}
	if cache != nil {
		if d, ok := cache.LookupDigest(id); ok {
			return d, true, nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", false, fmt.Errorf("hash %q: %w", path, err)
	}
	defer f.Close()
	sum, err := hashChunked(f, yield)
	if err != nil {
		return "", false, fmt.Errorf("hash %q: %w", path, err)
	}
	d := hex.EncodeToString(sum)
	if cache != nil {
		// The file may have changed while it was read; only cache a digest
		// whose identity still holds.
		if after, err := StatID(path); err == nil && after == id {
			if err := cache.StoreDigest(id, d); err != nil {
				return d, false, fmt.Errorf("cache digest of %q: %w", path, err)
			}
		}
	}
	return d, false, nil
}
