package agent_test

import (
	"bytes"
	"testing"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// freshInfer is what a new interpreter answers to its first request.
func freshInfer(t *testing.T, path string, in []byte) []byte {
	t.Helper()
	m, it, _, err := tflite.LoadStaged(path, tflite.LoadOptions{Interpreter: tflite.Options{Threads: 2}, Warm: tflite.WarmOptions{SkipInvoke: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer it.Close()
	if err := it.SetInput(0, in); err != nil {
		t.Fatal(err)
	}
	if err := it.Invoke(); err != nil {
		t.Fatal(err)
	}
	out, err := it.CopyOutput(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Warm must not change answers: equal inputs get bit-identical outputs,
// equal to a fresh interpreter's, whatever the shared interpreter ran
// before (its warm-up, other requests). The LSTM keeps state in variable
// tensors; unless the model is stateful they are reset before every request.
func TestWarmAnswersEqualFreshAnswers(t *testing.T) {
	files := map[string]string{"xor": "xor_model.tflite", "lstm": "keras_lstm_mnist_ptq.tflite",
		"v1": "mobilenet_v1_0.25_128_quant.tflite", "v2": "mobilenet_v2_1.0_224_quant.tflite",
		"bird": "mobilenet_v2_1.0_224_inat_bird_quant.tflite", "deeplab": "deeplabv3_mnv2_pascal_quant.tflite"}
	var models []agent.ModelConfig
	for id, f := range files {
		models = append(models, agent.ModelConfig{ID: id, Path: tflitetest.Path(t, f)})
	}
	models = append(models, agent.ModelConfig{ID: "lstm-stream", Path: tflitetest.Path(t, files["lstm"]), Stateful: true})
	a := start(t, testConfig(t, models...), agent.Options{})
	defer a.Close()
	for id, f := range files {
		info, err := tflite.Inspect(tflitetest.Path(t, f), nil)
		if err != nil {
			t.Fatal(err)
		}
		in, zeros := make([]byte, info.Inputs[0].Bytes), make([]byte, info.Inputs[0].Bytes)
		for i := range in {
			in[i] = byte(i*7 + 3)
		}
		if info.Inputs[0].Type == "float32" {
			in = float32Input(0, 1)
		}
		want := freshInfer(t, tflitetest.Path(t, f), in)
		for i, x := range [][]byte{in, zeros, in, in, zeros, in} {
			got := rawInfer(t, a, id, x)
			if bytes.Equal(x, in) && !bytes.Equal(got, want) {
				t.Fatalf("%s: request %d answered differently from a fresh interpreter", id, i)
			}
		}
	}
	// A stateful model carries its state on: the same input answers
	// differently once the stream has moved on.
	in := make([]byte, 28*28)
	for i := range in {
		in[i] = byte(i*7 + 3)
	}
	first := rawInfer(t, a, "lstm-stream", in)
	if second := rawInfer(t, a, "lstm-stream", in); bytes.Equal(first, second) {
		t.Fatal("stateful LSTM: state not carried between requests")
	}
}
