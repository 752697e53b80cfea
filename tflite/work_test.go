package tflite_test

import (
	"testing"

	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// The graph's work orders invokes before any was timed: it must rank the
// shared models as their published multiply-accumulates do, whatever their
// file sizes say (deeplabv3 is a smaller file than mobilenet_v2).
func TestWorkFollowsPublishedMACs(t *testing.T) {
	work := map[string]int64{}
	for _, name := range []string{"xor_model.tflite", "keras_lstm_mnist_ptq.tflite", "mobilenet_v1_0.25_128_quant.tflite",
		"mobilenet_v2_1.0_224_quant.tflite", "deeplabv3_mnv2_pascal_quant.tflite"} {
		f, err := tflite.ContentFacts(tflitetest.Path(t, name))
		if err != nil {
			t.Fatal(err)
		}
		work[name] = f.Work
		t.Logf("%s: %.1f M", name, float64(f.Work)/1e6)
	}
	within := func(name string, lo, hi float64) {
		if w := float64(work[name]); w < lo || w > hi {
			t.Errorf("%s: work %.3g, want within [%.3g, %.3g]", name, w, lo, hi)
		}
	}
	// Published: mobilenet_v1 0.25/128 14 M, mobilenet_v2 1.0/224 300 M,
	// deeplabv3 with a mobilenet_v2 backbone at 513×513 2.75 G.
	within("mobilenet_v1_0.25_128_quant.tflite", 12e6, 16e6)
	within("mobilenet_v2_1.0_224_quant.tflite", 270e6, 330e6)
	within("deeplabv3_mnv2_pascal_quant.tflite", 2.4e9, 3.1e9)
	if !(work["xor_model.tflite"] > 0 && work["xor_model.tflite"] < work["keras_lstm_mnist_ptq.tflite"] &&
		work["keras_lstm_mnist_ptq.tflite"] < work["mobilenet_v1_0.25_128_quant.tflite"]) {
		t.Errorf("small models out of order: %v", work)
	}
}
