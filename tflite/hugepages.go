package tflite

// Huge page-cache folios for large models. A model's weights are read
// through a shared file mapping; each cold start maps the file afresh,
// and the first invoke then touches every page of it. With 4 KiB page
// cache pages that costs here about 0.4 ms per MiB on top of the read
// (faults, page-table walks): ~120 ms for a 256 MiB model whose steady
// invoke takes 14. When the page cache holds the file in 2 MiB folios,
// the kernel maps them with one entry each and the same touch costs
// ~4 ms. Which folios the page cache uses is decided when the file is
// read in: readahead through a mapping with MADV_HUGEPAGE allocates 2 MiB
// folios (on kernels whose file system has large folios: ext4 from 6.16,
// XFS from 5.18), read(2) or a write usually does not. CacheHuge reads a
// model in that way, dropping its small pages first when asked to.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugeSize is the size of a PMD mapping (2 MiB with 4 KiB pages, on
// x86-64 and arm64; armv7 has none, and CacheHuge finds no huge folios).
const hugeSize = 2 << 20

// HugeMin is the smallest file CacheHuge works on: below it the touch
// costs under a millisecond either way.
const HugeMin = 4 * hugeSize

// madvPopulateRead is MADV_POPULATE_READ (Linux 5.14): fault the range in
// without touching it from user space.
const madvPopulateRead = 22

// touched keeps the fallback's page touches from being optimized away.
var touched atomic.Uint32

// HugeReport says how a model file's pages are mapped.
type HugeReport struct {
	Size int64 `json:"size"`
	// Huge is how many bytes a mapping of the file maps with 2 MiB entries.
	Huge int64 `json:"huge_bytes"`
	// Reread is how many bytes were read from storage again to get there
	// (the file's pages were dropped first).
	Reread int64         `json:"reread_bytes,omitempty"`
	Took   time.Duration `json:"-"`
}

// Whole reports whether every whole 2 MiB block of the file is mapped huge.
func (r HugeReport) Whole() bool {
	return r.Huge >= r.Size/hugeSize*hugeSize
}

// CacheHuge checks how the page cache holds the model at path and, when
// reread is set and it holds small pages, drops them and reads the file in
// again through a huge-page mapping. Pages another process (or a live
// mapping of this one) maps are not dropped: the model is then left as it
// was. A kernel without huge file folios gives Huge 0 and no error.
// Files under HugeMin are left alone.
func CacheHuge(path string, reread bool) (HugeReport, error) {
	t := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return HugeReport{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return HugeReport{}, err
	}
	r := HugeReport{Size: fi.Size()}
	if r.Size < HugeMin {
		return r, nil
	}
	if r.Huge, err = populate(f, r.Size, true, true); err != nil || r.Whole() || !reread {
		r.Took = time.Since(t)
		return r, err
	}
	if err := dropCache(f); err != nil {
		return r, err
	}
	resident, _, err := Residency(path)
	if err != nil {
		return r, err
	}
	r.Reread = r.Size - resident
	r.Huge, err = populate(f, r.Size, true, true)
	r.Took = time.Since(t)
	return r, err
}

// populate maps f (with MADV_HUGEPAGE when huge) and faults it all in.
// With measure, it returns how many bytes the mapping maps with 2 MiB
// entries.
func populate(f *os.File, size int64, huge, measure bool) (int64, error) {
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("map %s: %w", f.Name(), err)
	}
	defer func() { _ = unix.Munmap(data) }()
	// Refused by a kernel without transparent huge pages: the file is
	// still read in, in small pages.
	huge = huge && unix.Madvise(data, unix.MADV_HUGEPAGE) == nil
	if err := unix.Madvise(data, madvPopulateRead); err != nil {
		if !errors.Is(err, unix.EINVAL) {
			return 0, fmt.Errorf("read %s in: %w", f.Name(), err)
		}
		// Before Linux 5.14: touch a byte of every page.
		page := os.Getpagesize()
		var sink byte
		for i := 0; i < len(data); i += page {
			sink += data[i]
		}
		touched.Store(uint32(sink)) // kept: loads whose result is unused may be dropped
	}
	if !huge || !measure {
		return 0, nil
	}
	return pmdMapped(uintptr(unsafe.Pointer(&data[0])))
}

// pmdMapped reads FilePmdMapped of the mapping starting at addr from
// /proc/self/smaps.
func pmdMapped(addr uintptr) (int64, error) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("read smaps: %w", err)
	}
	head := []byte(strconv.FormatUint(uint64(addr), 16) + "-")
	sc := bufio.NewScanner(bytes.NewReader(b))
	in := false
	for sc.Scan() {
		line := sc.Bytes()
		if isVMAHeader(line) {
			in = bytes.HasPrefix(line, head)
			continue
		}
		if !in || !bytes.HasPrefix(line, []byte("FilePmdMapped:")) {
			continue
		}
		fields := bytes.Fields(line[len("FilePmdMapped:"):])
		if len(fields) == 0 {
			break
		}
		kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("smaps: %q: %w", line, err)
		}
		return kb << 10, nil
	}
	return 0, sc.Err() // older kernels have no FilePmdMapped line
}

// isVMAHeader: smaps entries start "start-end perms ...", field lines
// "Name: value".
func isVMAHeader(line []byte) bool {
	i := bytes.IndexByte(line, ' ')
	return i > 0 && bytes.IndexByte(line[:i], '-') > 0 && bytes.IndexByte(line[:i], ':') < 0
}
