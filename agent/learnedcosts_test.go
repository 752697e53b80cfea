package agent_test

import (
	"context"
	"slices"
	"testing"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// What the pool learned a model's misses cost is stored with its
// calibration on Close and handed back on the next start: the restarted
// pool ranks by it before any miss of its own.
func TestRestartKeepsLearnedColdCosts(t *testing.T) {
	cfg := testConfig(t, agent.ModelConfig{ID: "lstm", Path: tflitetest.Path(t, "keras_lstm_mnist_ptq.tflite")})
	first := start(t, cfg, agent.Options{})
	ctx := context.Background()
	for range 3 {
		if err := first.Pool().Evict("lstm"); err != nil {
			t.Fatal(err)
		}
		l, err := first.Pool().Acquire(ctx, "lstm")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Invoke(); err != nil {
			l.Release()
			t.Fatal(err)
		}
		l.Release()
	}
	learned := first.Pool().LearnedCosts()["lstm"]
	if len(learned) < 3 {
		t.Fatalf("learned %v after 3 misses", learned)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := start(t, cfg, agent.Options{})
	defer second.Close()
	m := byID(t, second.Report(), "lstm")
	if m.Calibrated == nil || !slices.Equal(m.Calibrated.LearnedMisses, learned) {
		t.Fatalf("restored calibration %+v, want the learned misses %v", m.Calibrated, learned)
	}
	if got := second.Pool().LearnedCosts()["lstm"]; len(got) < len(learned) || !slices.Equal(got[:len(learned)], learned) {
		t.Fatalf("the restarted pool starts from %v, want %v first", got, learned)
	}
}
