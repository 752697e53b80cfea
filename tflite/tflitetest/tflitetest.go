// Package tflitetest gives tests the shared real models and generated ones.
//
// The shared models live in ../shared/models beside the checkout (or
// $EDGE_AGENT_MODELS). Without them a test skips with a message saying so;
// under CI (CI=true) their absence fails the test, since CI always has them.
package tflitetest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/edge-agent/edge-agent/tflite/modelgen"
)

var (
	dirOnce sync.Once
	dir     string
	dirErr  error
)

// Long skips a soak, scale or load test unless EDGE_AGENT_LONG is set:
// `make test` leaves these to `make test-long` (which .ci/run runs too), so
// everyday feedback stays short without dropping a test. test-long runs
// them without the race detector, whose slowdown and memory would set
// their rates and figures. Makefile's LONG_TESTS must name every caller
// (scripts' TestLongTestsRunInTestLong checks it).
func Long(t testing.TB) {
	t.Helper()
	if os.Getenv("EDGE_AGENT_LONG") == "" {
		t.Skip("long test: `make test-long` runs it")
	}
}

// ModelsDir returns the verified shared models folder, or skips (fails
// under CI) when it is missing.
func ModelsDir(t testing.TB) string {
	t.Helper()
	dirOnce.Do(func() { dir, dirErr = findAndVerify() })
	if dirErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("shared models required under CI: %v", dirErr)
		}
		t.Skipf("SKIP real-model test: %v (put shared/ beside the checkout or set EDGE_AGENT_MODELS)", dirErr)
	}
	return dir
}

// Path returns the path of a shared model or image file.
func Path(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(ModelsDir(t), name)
}

func findAndVerify() (string, error) {
	d := os.Getenv("EDGE_AGENT_MODELS")
	if d == "" {
		// This file sits at <repo>/tflite/tflitetest; shared/ is beside <repo>.
		_, self, _, _ := runtime.Caller(0)
		d = filepath.Join(filepath.Dir(self), "..", "..", "..", "shared", "models")
	}
	sums := filepath.Join(d, "SHA256SUMS")
	f, err := os.Open(sums)
	if err != nil {
		return "", fmt.Errorf("shared models not found at %s", d)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 {
			continue
		}
		name := strings.TrimPrefix(fields[1], "*")
		got, err := fileSHA256(filepath.Join(d, name))
		if err != nil {
			return "", err
		}
		if got != fields[0] {
			return "", fmt.Errorf("shared model %s: sha256 %s, SHA256SUMS says %s", name, got, fields[0])
		}
	}
	return d, sc.Err()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Generate writes a generated model of about size bytes into dir and
// returns its path and spec.
func Generate(t testing.TB, dir string, size int64) (string, modelgen.Spec) {
	t.Helper()
	s, err := modelgen.ForSize(size)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, fmt.Sprintf("gen-%d.tflite", size))
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := modelgen.Write(f, s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, s
}

// CopyInPages copies src to dst in 4 KiB writes, as cp does: the page
// cache then holds dst in small folios, not the 2 MiB ones a large model
// is better mapped from.
func CopyInPages(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	// The wrappers hide ReadFrom/WriteTo, so the copy goes through the buffer.
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if err := out.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
