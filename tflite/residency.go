package tflite

// What a cold start reads from storage: how much of a model file is in
// the page cache (cachestat, or mincore) and how fast this device reads
// what is not.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Residency reports how many bytes of the file at path are in the page
// cache; nothing is read or faulted in. A cold start asks it on the
// request's path, so it uses cachestat(2) (Linux 6.5), which counts whole
// folios: a 256 MiB model costs microseconds where mincore on a fresh
// mapping looks up 65536 pages (~2 ms here) and maps and unmaps the file.
// Older kernels (and seccomp filters that refuse the call) get mincore.
func Residency(path string) (resident, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0, 0, err
	}
	size = fi.Size()
	if res, ok := cachestatResident(f, size); ok {
		return res, size, nil
	}
	if resident, err = mincoreResident(f, size); err != nil {
		return 0, size, fmt.Errorf("residency of %s: %w", path, err)
	}
	return resident, size, nil
}

// cachestatResident counts f's cached pages with cachestat(2); ok is false
// when the kernel cannot say: ENOSYS before 6.5 and EPERM under a seccomp
// filter, for good; EOPNOTSUPP (hugetlbfs) and the like for this file.
func cachestatResident(f *os.File, size int64) (int64, bool) {
	if noCachestat.Load() {
		return 0, false
	}
	var st unix.Cachestat_t
	err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{Off: 0, Len: uint64(size)}, &st, 0)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
			noCachestat.Store(true) // it will not start working: mincore from now on
		}
		return 0, false
	}
	return min(int64(st.Cache)*int64(os.Getpagesize()), size), true
}

// noCachestat is set once cachestat(2) turned out missing or refused.
var noCachestat atomic.Bool

// mincoreResident counts f's resident bytes with mincore on a fresh
// read-only mapping.
func mincoreResident(f *os.File, size int64) (resident int64, err error) {
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	defer func() { _ = unix.Munmap(data) }()
	page := int64(os.Getpagesize())
	vec := make([]byte, (size+page-1)/page)
	if err := mincore(data, vec); err != nil {
		return 0, err
	}
	for i, v := range vec {
		if v&1 != 0 {
			resident += min(page, size-int64(i)*page)
		}
	}
	return resident, nil
}

// ErrStillCached means the file's pages could not be dropped from the page
// cache (something maps it), so a read would not measure the storage.
var ErrStillCached = errors.New("the file stays in the page cache")

// MeasureReadRate drops path from the page cache (fadvise DONTNEED), then
// reads it through once and returns the rate in bytes per second: the
// storage's cold read rate, what a model evicted and dropped costs to read
// again. It fails with ErrStillCached when the drop did not take.
func MeasureReadRate(path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := dropCache(f); err != nil {
		return 0, err
	}
	resident, size, err := Residency(path)
	if err != nil {
		return 0, err
	}
	if size == 0 || resident > size/10 {
		return 0, fmt.Errorf("%s: %d of %d bytes: %w", path, resident, size, ErrStillCached)
	}
	t := time.Now()
	n, err := io.Copy(io.Discard, f)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return float64(n) / max(time.Since(t).Seconds(), 1e-9), nil
}

// dropCache drops f's pages from the page cache, but those something
// maps. Dirty pages are not dropped: they are written back first (a file
// just copied in may not be on storage yet).
func dropCache(f *os.File) error {
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("drop %s from the page cache: %w", f.Name(), err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("drop %s from the page cache: %w", f.Name(), err)
	}
	return nil
}

// mincore fills vec with one byte per page of b, bit 0 set when resident
// (x/sys/unix has no wrapper for it).
func mincore(b, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}
