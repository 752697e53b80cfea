package tflite_test

import (
	"bufio"
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

func copyWith(t *testing.T, src, dst string, edit func([]byte) []byte) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, edit(b), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// loadAndWarm runs the whole cold path, where every bad model must fail
// with its own kind.
func loadAndWarm(path string) error {
	m, it, _, err := tflite.LoadStaged(path, tflite.LoadOptions{})
	if err != nil {
		return err
	}
	it.Close()
	return m.Close()
}

func TestBadModels(t *testing.T) {
	dir := t.TempDir()
	v2 := tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite")
	empty := filepath.Join(dir, "empty.tflite")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	random := filepath.Join(dir, "random.tflite")
	rnd := make([]byte, 64<<10)
	rand.New(rand.NewSource(1)).Read(rnd)
	if err := os.WriteFile(random, rnd, 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "adir.tflite")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		path string
		want *tflite.Kind
	}{
		{"missing", filepath.Join(dir, "nope.tflite"), tflite.ErrModelNotFound},
		{"directory", sub, tflite.ErrModelNotRegular},
		{"empty", empty, tflite.ErrModelEmpty},
		{"random bytes", random, tflite.ErrModelNotTFLite},
		{"tiny", copyWith(t, v2, filepath.Join(dir, "tiny.tflite"), func(b []byte) []byte { return b[:5] }), tflite.ErrModelNotTFLite},
		{"truncated", copyWith(t, v2, filepath.Join(dir, "trunc.tflite"), func(b []byte) []byte { return b[:len(b)/2] }), tflite.ErrModelTruncated},
		{"corrupted header", copyWith(t, v2, filepath.Join(dir, "hdr.tflite"), func(b []byte) []byte {
			copy(b[0:4], []byte{0xff, 0xff, 0xff, 0x7f}) // root table offset far past the end
			return b
		}), tflite.ErrModelInvalid},
		{"unknown custom op", tflitetest.Path(t, "model_invoking_error.tflite"), tflite.ErrUnresolvedOp},
		{"edge tpu model without delegate", tflitetest.Path(t, "mobilenet_v1_0.25_128_quant_edgetpu.tflite"), tflite.ErrNeedsDelegate},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := loadAndWarm(c.path)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want kind %s", err, c.want.Code())
			}
			if got := tflite.Code(err); got != c.want.Code() {
				t.Fatalf("code = %q, want %q", got, c.want.Code())
			}
			var te *tflite.Error
			if !errors.As(err, &te) || te.Path != c.path {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
	// The runtime's own words are carried, not go-tflite's garbled ones.
	err := loadAndWarm(tflitetest.Path(t, "model_invoking_error.tflite"))
	if !strings.Contains(err.Error(), "fake-op-double") {
		t.Fatalf("runtime message missing from %v", err)
	}
	err = loadAndWarm(filepath.Join(dir, "hdr.tflite"))
	if !strings.Contains(err.Error(), "not a valid Flatbuffer") {
		t.Fatalf("runtime verifier message missing from %v", err)
	}
}

func TestUnreadableModel(t *testing.T) {
	p := copyWith(t, tflitetest.Path(t, "xor_model.tflite"), filepath.Join(t.TempDir(), "secret.tflite"), func(b []byte) []byte { return b })
	if err := os.Chmod(p, 0o000); err != nil {
		t.Fatal(err)
	}
	var err error
	if os.Geteuid() == 0 {
		// Root reads anything; take this thread's filesystem identity to
		// nobody, which also drops CAP_DAC_OVERRIDE for it.
		runtime.LockOSThread()
		if e := syscall.Setfsuid(65534); e != nil {
			t.Fatal(e)
		}
		err = loadAndWarm(p)
		syscall.Setfsuid(0)
		runtime.UnlockOSThread()
	} else {
		err = loadAndWarm(p)
	}
	if !errors.Is(err, tflite.ErrModelUnreadable) || !errors.Is(err, os.ErrPermission) {
		t.Fatalf("err = %v, want %s wrapping a permission error", err, tflite.ErrModelUnreadable.Code())
	}
}

// smaps reads process-wide counters (kB) from /proc/self/smaps_rollup.
func smaps(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == field+":" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v << 10
		}
	}
	t.Fatalf("%s not in smaps_rollup", field)
	return 0
}

func mapping(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasSuffix(line, " "+path) {
			return strings.Fields(line)[1]
		}
	}
	return ""
}

func TestModelIsMemoryMapped(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP in -short: writes a 256 MiB model")
	}
	p, _ := tflitetest.Generate(t, t.TempDir(), 256<<20)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	before := smaps(t, "Anonymous")
	m, err := tflite.LoadModel(p)
	if err != nil {
		t.Fatal(err)
	}
	after := smaps(t, "Anonymous")
	defer m.Close()

	if perms := mapping(t, p); perms != "r--s" {
		t.Fatalf("model mapping perms = %q, want r--s (read-only shared file mapping)", perms)
	}
	grew := after - before
	t.Logf("model %d MiB, anonymous memory grew %d KiB on load", fi.Size()>>20, grew>>10)
	if grew > fi.Size()/16 {
		t.Fatalf("anonymous memory grew %d bytes loading a %d-byte model: it was copied, not mapped", grew, fi.Size())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if perms := mapping(t, p); perms != "" {
		t.Fatalf("mapping still present after Close: %s", perms)
	}
}

func TestDigestCachedByFileIdentity(t *testing.T) {
	dir := t.TempDir()
	p := copyWith(t, tflitetest.Path(t, "xor_model.tflite"), filepath.Join(dir, "m.tflite"), func(b []byte) []byte { return b })
	var cache tflite.MemDigestCache
	d1, hit, err := tflite.Digest(p, &cache)
	if err != nil || hit {
		t.Fatalf("first digest: %v hit=%v", err, hit)
	}
	d2, hit, err := tflite.Digest(p, &cache)
	if err != nil || !hit || d2 != d1 {
		t.Fatalf("second digest: %v hit=%v same=%v", err, hit, d1 == d2)
	}
	// Same path, new content: the identity changes, so it is hashed again.
	copyWith(t, tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"), p, func(b []byte) []byte { return b })
	d3, hit, err := tflite.Digest(p, &cache)
	if err != nil || hit || d3 == d1 {
		t.Fatalf("after rewrite: %v hit=%v changed=%v", err, hit, d3 != d1)
	}
}

// A file replaced by one of the same size (and even the same mtime) is a
// new identity: renamed over (a new inode) or rewritten in place (a new
// ctime), its digest is computed again, never the old one reused.
func TestDigestNotReusedForSameSizeReplacement(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.tflite")
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(p, "aaaaaaaa")
	var cache tflite.MemDigestCache
	d1, hit, err := tflite.Digest(p, &cache)
	if err != nil || hit {
		t.Fatalf("first digest: %v hit=%v", err, hit)
	}
	if d, hit, err := tflite.Digest(p, &cache); err != nil || !hit || d != d1 {
		t.Fatalf("unchanged file: %v hit=%v same=%v", err, hit, d == d1)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	// Renamed over: same size, same mtime, new inode.
	tmp := filepath.Join(dir, "m.tmp")
	write(tmp, "bbbbbbbb")
	if err := os.Chtimes(tmp, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	d2, hit, err := tflite.Digest(p, &cache)
	if err != nil || hit || d2 == d1 {
		t.Fatalf("renamed over: %v hit=%v changed=%v", err, hit, d2 != d1)
	}
	// Rewritten in place: same inode, size and mtime; the ctime moves.
	time.Sleep(10 * time.Millisecond) // a ctime tick on coarse clocks
	write(p, "cccccccc")
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	d3, hit, err := tflite.Digest(p, &cache)
	if err != nil || hit || d3 == d2 {
		t.Fatalf("rewritten in place: %v hit=%v changed=%v", err, hit, d3 != d2)
	}
}

func TestGeneratedModelMatchesReference(t *testing.T) {
	p, spec := tflitetest.Generate(t, t.TempDir(), 2<<20)
	m, it, rep, err := tflite.LoadStaged(p, tflite.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer it.Close()
	if rep.Footprint.Mapped != m.Size || rep.Stages.FirstInvoke <= 0 || rep.Stages.Steady <= 0 {
		t.Fatalf("incomplete report %+v", rep)
	}
	in := make([]float32, spec.Width)
	for i := range in {
		in[i] = float32(i%13)/13 - 0.4
	}
	out := runFloat(t, it, in)
	ref := referenceOf(spec, in)
	for i := range out {
		if d := float64(out[i]) - ref[i]; d > 1e-4 || d < -1e-4 {
			t.Fatalf("output %d = %v, reference %v", i, out[i], ref[i])
		}
	}
}
