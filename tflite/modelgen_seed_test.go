package tflite_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/edge-agent/edge-agent/tflite/modelgen"
)

// A seeded generated model is another file of the same shape, and the
// runtime's answer still matches the reference computation for its seed.
func TestSeededGeneratedModel(t *testing.T) {
	dir := t.TempDir()
	spec, err := modelgen.ForSize(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	files := map[int64][]byte{}
	for _, seed := range []int64{0, 7} {
		spec.Seed = seed
		var buf bytes.Buffer
		if err := modelgen.Write(&buf, spec); err != nil {
			t.Fatal(err)
		}
		files[seed] = buf.Bytes()
		p := filepath.Join(dir, "m.tflite")
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		answer(t, p, spec)
	}
	if len(files[0]) != len(files[7]) || bytes.Equal(files[0], files[7]) {
		t.Fatalf("seeds 0 and 7: %d and %d bytes, equal %v; want the same size, other weights", len(files[0]), len(files[7]), bytes.Equal(files[0], files[7]))
	}
}
