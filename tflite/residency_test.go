package tflite_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edge-agent/edge-agent/tflite"
)

// Residency sees a file read into the page cache; MeasureReadRate drops
// it first, reads it from storage and says so when the drop does not take
// (the file is mapped).
func TestResidencyAndReadRate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f.bin")
	if err := os.WriteFile(p, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tflite.PageIn(p); err != nil {
		t.Fatal(err)
	}
	res, size, err := tflite.Residency(p)
	if err != nil || size != 4<<20 || res != size {
		t.Fatalf("after reading it: %d of %d resident, %v", res, size, err)
	}
	rate, err := tflite.MeasureReadRate(p)
	if errors.Is(err, tflite.ErrStillCached) {
		t.Skipf("this filesystem keeps the file cached after fadvise(DONTNEED): %v", err)
	}
	if err != nil || rate <= 0 {
		t.Fatalf("read rate %.0f B/s, %v", rate, err)
	}
	t.Logf("cold read rate here: %.0f MB/s", rate/1e6)
	if res, _, _ := tflite.Residency(p); res != size {
		t.Fatalf("after the measuring read: %d of %d resident", res, size)
	}
	// Mapped and touched, the file cannot be dropped: a clear error, not
	// the page cache's speed passed off as the storage's.
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Munmap(data) }()
	sum := 0
	for i := 0; i < len(data); i += 4096 {
		sum += int(data[i])
	}
	if _, err := tflite.MeasureReadRate(p); !errors.Is(err, tflite.ErrStillCached) {
		t.Fatalf("read rate of a mapped file: %v (sum %d), want ErrStillCached", err, sum)
	}
}

// cachestat (the fast path) and mincore (the fallback) agree on a file
// that is partly in the page cache.
func TestResidencyMethodsAgree(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f.bin")
	size := int64(8<<20 + 123) // a partial last page
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	dropCache(t, p)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 3<<20), 1<<20); err != nil {
		t.Fatal(err)
	}
	viaCachestat, viaMincore, ok, err := tflite.ResidencyBothWaysForTest(f, size)
	if err != nil {
		t.Fatal(err)
	}
	if viaMincore < 3<<20 || viaMincore > size {
		t.Fatalf("mincore: %d of %d bytes resident after reading 3 MiB", viaMincore, size)
	}
	if !ok {
		t.Skipf("no cachestat(2) on this kernel (mincore: %d bytes)", viaMincore)
	}
	if d := viaCachestat - viaMincore; d < -4096 || d > 4096 {
		t.Fatalf("cachestat says %d bytes resident, mincore %d", viaCachestat, viaMincore)
	}
	if viaCachestat == size {
		t.Fatalf("the drop did not take: all %d bytes resident", size)
	}
}

// PageIn brings a file dropped from the page cache back whole, whatever
// its size (a model of a few hundred bytes, one under HugeMin, one with a
// partial last page), and an empty file is no error.
func TestPageInReadsEveryPage(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int64{400, 3<<20 + 123, 0} {
		p := filepath.Join(dir, "f.bin")
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		dropCache(t, p)
		if res, _, err := tflite.Residency(p); err != nil || (size > 0 && res == size) {
			t.Skipf("this filesystem keeps the file cached after fadvise(DONTNEED): %d of %d resident, %v", res, size, err)
		}
		if err := tflite.PageIn(p); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if res, _, err := tflite.Residency(p); err != nil || res != size {
			t.Fatalf("%d bytes: %d resident after PageIn, %v", size, res, err)
		}
	}
	if err := tflite.PageIn(filepath.Join(dir, "missing.tflite")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing file: %v, want ErrNotExist", err)
	}
}
