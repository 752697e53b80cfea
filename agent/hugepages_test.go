package agent_test

import (
	"bytes"
	"testing"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// A large model copied in (small pages) is read in again as 2 MiB folios
// once it leaves the pool, and answers as before. 66 MiB: over what the
// read-rate probe reads, so only the huge-page pass touches its pages.
func TestHugePagesForLargeModels(t *testing.T) {
	dir := t.TempDir()
	gen, _ := tflitetest.Generate(t, dir, 66<<20)
	path := dir + "/big.tflite"
	tflitetest.CopyInPages(t, gen, path)
	if r, err := tflite.CacheHuge(path, false); err != nil || r.Whole() {
		t.Fatalf("copied in 4 KiB writes: %+v, %v; want small pages to start from", r, err)
	}
	cfg := testConfig(t, agent.ModelConfig{ID: "big", Path: path})
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	in := make([]byte, 4*1024)
	for i := range in {
		in[i] = byte(i % 61)
	}
	want := rawInfer(t, a, "big", in)
	if err := a.Pool().Evict("big"); err != nil {
		t.Fatal(err)
	}
	ev := waitEvents(t, a, "huge_pages", 1)[0]
	reread, _ := ev["reread_bytes"].(float64)
	huge, _ := ev["huge_bytes"].(float64)
	if ev["model"] != "big" || reread <= 0 {
		t.Fatalf("huge_pages event %v: want big read in again", ev)
	}
	r, err := tflite.CacheHuge(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("huge_pages %v; the file now: %d of %d bytes mapped huge", ev, r.Huge, r.Size)
	if huge > 0 && !r.Whole() {
		t.Errorf("%d of %d bytes mapped huge after the pass, want every whole 2 MiB block", r.Huge, r.Size)
	}
	if got := rawInfer(t, a, "big", in); !bytes.Equal(got, want) {
		t.Fatal("big answers differently after its pages were read in again")
	}
}
