package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/update"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

func field[T any](t *testing.T, ev map[string]any, key string) T {
	t.Helper()
	b, _ := json.Marshal(ev[key])
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("event field %s: %v (%v)", key, err, ev)
	}
	return v
}

// An update is checked against recent real requests: the agent replays
// them (the images as sent) through both versions and reports top-1
// agreement; mobilenet v1 0.25 and v2 agree on cat and bird and not on
// grace_hopper. With min_agreement above that, the update is refused, the
// same bytes are not tried again, and v1 keeps serving.
func TestUpdateParityAgreement(t *testing.T) {
	v1, v2 := readShared(t, "mobilenet_v1_0.25_128_quant.tflite"), readShared(t, "mobilenet_v2_1.0_224_quant.tflite")
	images := map[string][]byte{}
	for _, n := range []string{"cat.bmp", "bird.bmp", "grace_hopper.bmp"} {
		images[n] = readShared(t, n)
	}
	for _, c := range []struct {
		name     string
		min      float64
		accepted bool
	}{{"reported", 0, true}, {"refused below min_agreement", 0.9, false}} {
		t.Run(c.name, func(t *testing.T) {
			a, path := updateAgent(t, v1, agent.ModelConfig{AllowSignatureChange: true, MinAgreement: c.min})
			before := map[string]int{}
			for n, img := range images {
				before[n] = top1(t, a, "cls", img)
			}
			replaceFile(t, path, v2)
			rescanNow(t, a)
			if c.accepted {
				ev := waitEvents(t, a, "model_updated", 1)[0]
				p := field[update.Parity](t, ev, "parity")
				if p.Replayed != 3 || p.Agreed != 2 {
					t.Fatalf("parity %+v, want 2 of 3 agreeing", p)
				}
				t.Logf("v1 → v2: parity %+v, checks %v", p, ev["checks"])
				return
			}
			ev := waitEvents(t, a, "model_update_rejected", 1)[0]
			if ev["code"] != update.ErrDisagrees.Code() {
				t.Fatalf("rejected with %v, want %s", ev["code"], update.ErrDisagrees.Code())
			}
			for n, img := range images {
				if got := top1(t, a, "cls", img); got != before[n] {
					t.Fatalf("%s after a refused update: %d, want v1's %d", n, got, before[n])
				}
			}
			if r := rescanNow(t, a); !slices.Equal(r.Unchanged, []string{"cls"}) || len(eventsOf(t, a, "model_update_rejected")) != 1 {
				t.Fatalf("the refused bytes were tried again: %+v", r)
			}
		})
	}
}

// How long from a replaced file to the first answer from the new version,
// next to the new model's cold time, and the pool's bytes during the swap:
// figures for the README, logged (no wall-clock assertion).
func TestUpdateFirstAnswerFigures(t *testing.T) {
	v1, v2 := readShared(t, "mobilenet_v1_0.25_128_quant.tflite"), readShared(t, "mobilenet_v2_1.0_224_quant.tflite")
	grace := readShared(t, "grace_hopper.bmp")
	a, path := updateAgent(t, v1, agent.ModelConfig{AllowSignatureChange: true})
	old := top1(t, a, "cls", grace)
	t0 := time.Now()
	replaceFile(t, path, v2)
	rescanNow(t, a)
	for top1(t, a, "cls", grace) == old { // asked every 5 ms until v2 answers
		time.Sleep(5 * time.Millisecond)
	}
	first := time.Since(t0)
	ev := waitEvents(t, a, "model_updated", 1)[0]
	st := field[tflite.Stages](t, ev, "stages")
	var after int64
	for _, m := range a.Pool().Models() {
		after += m.Bytes
	}
	t.Logf("file replaced → first answer from v2: %.0f ms (staging %v ms: warm %v, checks %v); v2's cold time %.0f ms; pool peak %.1f MiB during the swap, %.1f MiB after",
		float64(first.Microseconds())/1e3, ev["took_ms"], ev["warm_ms"], ev["checks_ms"], float64(st.Cold().Microseconds())/1e3,
		float64(a.Pool().Stats().PeakBytes)/(1<<20), float64(after)/(1<<20))
}

// Updates that cannot serve what the old version served are refused with
// their code while the old version keeps serving: a new signature not
// allowed, a wrong golden answer, a custom op the runtime lacks, an Edge
// TPU model without its delegate.
func TestUpdateRefusals(t *testing.T) {
	v1 := readShared(t, "mobilenet_v1_0.25_128_quant.tflite")
	cat := readShared(t, "cat.bmp")
	golden := tflitetest.Path(t, "cat.bmp")
	g := 286
	for _, c := range []struct {
		name string
		cfg  agent.ModelConfig
		next string
		code string
	}{
		{"signature", agent.ModelConfig{}, "mobilenet_v2_1.0_224_quant.tflite", update.ErrSignatureChanged.Code()},
		{"golden", agent.ModelConfig{AllowSignatureChange: true, GoldenInput: golden, GoldenTop1: &g}, "mobilenet_v2_1.0_224_inat_bird_quant.tflite", update.ErrGoldenMismatch.Code()},
		{"custom op", agent.ModelConfig{AllowSignatureChange: true}, "model_invoking_error.tflite", tflite.ErrUnresolvedOp.Code()},
		{"edge tpu", agent.ModelConfig{}, "mobilenet_v1_0.25_128_quant_edgetpu.tflite", tflite.ErrNeedsDelegate.Code()},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, path := updateAgent(t, v1, c.cfg)
			want := top1(t, a, "cls", cat)
			replaceFile(t, path, readShared(t, c.next))
			rescanNow(t, a)
			ev := waitEvents(t, a, "model_update_rejected", 1)[0]
			if ev["code"] != c.code {
				t.Fatalf("rejected with %v (%v), want %s", ev["code"], ev["reason"], c.code)
			}
			if got := top1(t, a, "cls", cat); got != want {
				t.Fatalf("after a refused update: %d, want %d", got, want)
			}
		})
	}
}

// rollback restores the previous version warm (its first request is served
// by a warm interpreter) and refuses the version it replaced on later
// rescans; without a previous version it says so.
func TestRollbackRestoresThePreviousVersionWarm(t *testing.T) {
	v1, v2 := readShared(t, "mobilenet_v1_0.25_128_quant.tflite"), readShared(t, "mobilenet_v2_1.0_224_quant.tflite")
	img := readShared(t, "grace_hopper.bmp")
	a, path := updateAgent(t, v1, agent.ModelConfig{AllowSignatureChange: true})
	ctx := context.Background()
	rollback := func() (any, error) {
		return a.Command(ctx, mqtt.Command{Verb: "rollback", Payload: []byte(`{"model":"cls"}`)})
	}
	if _, err := rollback(); !errors.Is(err, update.ErrNoPrevious) {
		t.Fatalf("rollback with no previous version: %v", err)
	}
	fromV1 := top1(t, a, "cls", img)
	replaceFile(t, path, v2)
	rescanNow(t, a)
	waitEvents(t, a, "model_updated", 1)
	if top1(t, a, "cls", img) == fromV1 {
		t.Fatal("v2 answers like v1: the test cannot tell them apart")
	}
	res, err := rollback()
	if err != nil {
		t.Fatal(err)
	}
	if rep := res.(update.Report); !rep.Rollback || rep.Staged != "beside" {
		t.Fatalf("rollback report %+v: want a staged (warm) rollback", rep)
	}
	r, err := a.Command(ctx, mqtt.Command{Verb: "infer", Binary: true, Model: "cls", Payload: img})
	if err != nil {
		t.Fatal(err)
	}
	if rep := r.(agent.InferReply); !rep.Warm || rep.Top[0].Index != fromV1 {
		t.Fatalf("first answer after the rollback: %+v, want v1's %d from a warm interpreter", rep, fromV1)
	}
	if len(eventsOf(t, a, "model_rolled_back")) != 1 {
		t.Fatal("no model_rolled_back event")
	}
	// The file still holds v2: a rescan leaves the rollback in place.
	if res := rescanNow(t, a); !slices.Equal(res.Unchanged, []string{"cls"}) || top1(t, a, "cls", img) != fromV1 {
		t.Fatalf("rescan after the rollback: %+v", res)
	}
}

// An update whose first requests fail (clients send the old input size)
// is rolled back on its own, and requests succeed again.
func TestAutomaticRollbackOnFailingRequests(t *testing.T) {
	v1, v2 := readShared(t, "mobilenet_v1_0.25_128_quant.tflite"), readShared(t, "mobilenet_v2_1.0_224_quant.tflite")
	// Without recent requests to replay (parity_ring = 0) nothing shows
	// before the swap that clients' 128×128 tensors no longer fit.
	path := filepath.Join(t.TempDir(), "cls.tflite")
	replaceFile(t, path, v1)
	cfg := testConfig(t, agent.ModelConfig{ID: "cls", Path: path, AllowSignatureChange: true})
	cfg.Updates.ParityRing = 0
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	in := make([]byte, 128*128*3)
	ask := func() error {
		_, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", Binary: true, Model: "cls", Payload: in})
		return err
	}
	for range 5 {
		if err := ask(); err != nil {
			t.Fatal(err)
		}
	}
	replaceFile(t, path, v2)
	rescanNow(t, a)
	waitEvents(t, a, "model_updated", 1)
	// Requests keep failing until the rollback has swapped v1 back in.
	failed := 0
	deadline := time.Now().Add(time.Minute)
	for len(eventsOf(t, a, "model_rolled_back")) == 0 {
		if err := ask(); err != nil {
			failed++
		}
		if time.Now().After(deadline) {
			t.Fatalf("no automatic rollback after %d failed requests", failed)
		}
	}
	ev := waitEvents(t, a, "model_rolled_back", 1)[0]
	waitFor(t, "requests succeed again", func() bool { return ask() == nil })
	t.Logf("rolled back after %d failed requests: %v", failed, ev["reason"])
}

// A directory where the model file was is refused (model_not_regular) and
// the version serving keeps serving.
func TestUpdateRefusesADirectory(t *testing.T) {
	a, path := updateAgent(t, readShared(t, "mobilenet_v1_0.25_128_quant.tflite"), agent.ModelConfig{})
	cat := readShared(t, "cat.bmp")
	want := top1(t, a, "cls", cat)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if r := rescanNow(t, a); !slices.Equal(r.Failed, []string{"cls"}) {
		t.Fatalf("rescan %+v", r)
	}
	if ev := waitEvents(t, a, "model_update_rejected", 1)[0]; ev["code"] != tflite.ErrModelNotRegular.Code() {
		t.Fatalf("rejected with %v, want %s", ev["code"], tflite.ErrModelNotRegular.Code())
	}
	if got := top1(t, a, "cls", cat); got != want {
		t.Fatalf("after the file became a directory: %d, want %d", got, want)
	}
}
