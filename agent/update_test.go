package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// A model file replaced on disk is picked up by a rescan: the new version
// answers from then on, with no failed request meanwhile; a bad file
// (truncated, not a model) is rejected and the version serving keeps
// serving.
func TestRescanPicksUpAReplacedModel(t *testing.T) {
	v1, err := os.ReadFile(tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	bird, err := os.ReadFile(tflitetest.Path(t, "mobilenet_v2_1.0_224_inat_bird_quant.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := os.ReadFile(tflitetest.Path(t, "cat.bmp"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "cls.tflite")
	replaceFile(t, path, v1)
	// The bird model takes 224×224 images: a new signature, allowed here.
	cfg := testConfig(t, agent.ModelConfig{ID: "cls", Path: path, AllowSignatureChange: true})
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	ctx := context.Background()
	ask := func() (int, error) {
		res, err := a.Command(ctx, mqtt.Command{Verb: "infer", Binary: true, Model: "cls", ID: "u", Payload: cat})
		if err != nil {
			return 0, err
		}
		return res.(agent.InferReply).Top[0].Index, nil
	}
	before, err := ask()
	if err != nil || before != 286 {
		t.Fatalf("v1 on cat: %d %v", before, err)
	}
	// A client keeps asking throughout.
	var failed, asked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			asked.Add(1)
			if _, err := ask(); err != nil {
				failed.Add(1)
				t.Errorf("request during updates: %v", err)
			}
		}
	}()
	rescan := func() agent.ReloadResult {
		res, err := a.Command(ctx, mqtt.Command{Verb: "rescan"})
		if err != nil {
			t.Fatal(err)
		}
		return res.(agent.ReloadResult)
	}
	for _, bad := range [][]byte{v1[:len(v1)/2], []byte("not a model at all"), bird[:4096]} {
		replaceFile(t, path, bad)
		if r := rescan(); !slices.Equal(r.Failed, []string{"cls"}) || len(r.Changed) != 0 {
			t.Fatalf("bad update: %+v", r)
		}
		if got, err := ask(); err != nil || got != before {
			t.Fatalf("after a rejected update: %d %v", got, err)
		}
	}
	replaceFile(t, path, bird)
	if r := rescan(); !slices.Equal(r.Changed, []string{"cls"}) {
		t.Fatalf("update: %+v", r)
	}
	waitEvents(t, a, "model_updated", 1)
	after, err := ask()
	if err != nil || after == before {
		t.Fatalf("after the update the old version answered: %d %v", after, err)
	}
	// The same content again (touch) is no change.
	os.Chtimes(path, time.Now(), time.Now())
	if r := rescan(); !slices.Equal(r.Unchanged, []string{"cls"}) {
		t.Fatalf("touch: %+v", r)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests during 5 rescans (3 rejected updates, 1 update, 1 touch), %d failed", asked.Load(), failed.Load())
}
