package agent_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/tflite"
)

func registered(a *agent.Agent, id string) bool {
	return slices.ContainsFunc(a.Pool().Models(), func(m tflite.ModelStatus) bool { return m.ID == id })
}

// With the watch on, no rescan is needed: a file renamed over a model, a
// model rewritten in place (read only once its size is still), a new file
// in models_dir and a removed one are picked up; a configured model whose
// file disappears keeps serving the version it has.
func TestWatchPicksUpModelChanges(t *testing.T) {
	v1, v2 := readShared(t, "mobilenet_v1_0.25_128_quant.tflite"), readShared(t, "mobilenet_v2_1.0_224_quant.tflite")
	img := readShared(t, "grace_hopper.bmp")
	dir := t.TempDir()
	path := filepath.Join(dir, "cls.tflite")
	replaceFile(t, path, v1)
	cfg := testConfig(t, agent.ModelConfig{ID: "cls", Path: path, AllowSignatureChange: true})
	cfg.ModelsDir = dir
	on := true
	cfg.Updates.Watch, cfg.Updates.Debounce = &on, 400*time.Millisecond
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	fromV1 := top1(t, a, "cls", img)

	// 1. Renamed over the model (how deployment tools write).
	replaceFile(t, path, v2)
	waitEvents(t, a, "model_updated", 1)
	fromV2 := top1(t, a, "cls", img)
	if fromV2 == fromV1 {
		t.Fatalf("v1 and v2 both answer %d on grace_hopper: the test cannot tell them apart", fromV1)
	}

	// 2. Rewritten in place, in pieces with pauses shorter than the
	// debounce: read once, whole.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(v1); off += len(v1) / 8 {
		if _, err := f.Write(v1[off:min(off+len(v1)/8, len(v1))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	waitEvents(t, a, "model_updated", 2)
	if got := top1(t, a, "cls", img); got != fromV1 {
		t.Fatalf("after the in-place rewrite to v1: answer %d, want %d", got, fromV1)
	}
	if rej := eventsOf(t, a, "model_update_rejected"); len(rej) != 0 {
		t.Fatalf("a file being written was read half-done: %v", rej)
	}

	// 3. A new file in models_dir, then 4. removed again.
	replaceFile(t, filepath.Join(dir, "extra.tflite"), v1)
	waitFor(t, "extra is registered", func() bool { return registered(a, "extra") })
	if got := top1(t, a, "extra", img); got != fromV1 {
		t.Fatalf("extra answered %d", got)
	}
	if err := os.Remove(filepath.Join(dir, "extra.tflite")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "extra is gone", func() bool { return !registered(a, "extra") })

	// 5. The configured file disappears: rejected, the version serving stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitEvents(t, a, "model_update_rejected", 1)
	if got := top1(t, a, "cls", img); got != fromV1 {
		t.Fatalf("after the file was removed: answer %d, want %d", got, fromV1)
	}
}
