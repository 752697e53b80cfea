package agent_test

import (
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/update"
)

// tightAgent serves v1 pinned under a budget that holds the larger of v1
// and next warm, but never both.
func tightAgent(t *testing.T, v1, next []byte, m agent.ModelConfig) (*agent.Agent, string) {
	t.Helper()
	b1, b2 := warmBytes(t, v1), warmBytes(t, next)
	budget := max(b1, b2) + min(b1, b2)/2
	t.Logf("warm bytes: serving %d, update %d; budget %d", b1, b2, budget)
	path := t.TempDir() + "/cls.tflite"
	replaceFile(t, path, v1)
	m.ID, m.Path, m.Pinned = "cls", path, true
	cfg := testConfig(t, m)
	cfg.Pool.Budget = agent.ByteSize(budget)
	a := start(t, cfg, agent.Options{})
	t.Cleanup(func() { _ = a.Close() })
	return a, path
}

// Under a budget that fits one version, with the serving one pinned, an
// update is still checked: one answering the golden image with another
// class is refused and the old version keeps serving (it was swapped in
// cold with the golden check skipped).
func TestTightUpdateGoldenMismatchRefused(t *testing.T) {
	v1, bird := readShared(t, "mobilenet_v1_0.25_128_quant.tflite"), readShared(t, "mobilenet_v2_1.0_224_inat_bird_quant.tflite")
	golden := t.TempDir() + "/cat.bmp"
	replaceFile(t, golden, readShared(t, "cat.bmp"))
	want := 286
	a, path := tightAgent(t, v1, bird, agent.ModelConfig{AllowSignatureChange: true, GoldenInput: golden, GoldenTop1: &want})
	cat := readShared(t, "cat.bmp")
	if got := top1(t, a, "cls", cat); got != 286 {
		t.Fatalf("v1 on cat: %d", got)
	}
	replaceFile(t, path, bird)
	rescanNow(t, a)
	ev := waitAny(t, a, "model_updated", "model_update_rejected")
	if ev["event"] != "model_update_rejected" || ev["code"] != update.ErrGoldenMismatch.Code() || ev["staged"] != "alone" {
		t.Fatalf("a golden mismatch under a tight budget: %v, want refused for golden_mismatch, checked alone", ev)
	}
	if got := top1(t, a, "cls", cat); got != 286 {
		t.Fatalf("after the refused update: %d, want v1's 286", got)
	}
}

// The same with a model that fails only at allocation (a custom op the
// runtime lacks, same input and output as v1): refused, v1 serves.
func TestTightUpdateCustomOpRefused(t *testing.T) {
	v1, tpu := readShared(t, "mobilenet_v1_0.25_128_quant.tflite"), readShared(t, "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
	a, path := tightAgent(t, v1, v1, agent.ModelConfig{})
	cat := readShared(t, "cat.bmp")
	if got := top1(t, a, "cls", cat); got != 286 {
		t.Fatalf("v1 on cat: %d", got)
	}
	replaceFile(t, path, tpu)
	rescanNow(t, a)
	ev := waitAny(t, a, "model_updated", "model_update_rejected")
	if ev["event"] != "model_update_rejected" {
		t.Fatalf("a model that cannot allocate was swapped in under a tight budget: %v", ev)
	}
	t.Logf("refused: %v %v", ev["code"], ev["reason"])
	if got := top1(t, a, "cls", cat); got != 286 {
		t.Fatalf("after the refused update: %d, want v1's 286", got)
	}
}

// waitAny waits for the first event of any of kinds.
func waitAny(t *testing.T, a *agent.Agent, kinds ...string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, k := range kinds {
			if ev := eventsOf(t, a, k); len(ev) > 0 {
				return ev[0]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("none of %v within a minute", kinds)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
