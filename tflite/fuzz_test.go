package tflite

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-agent/edge-agent/tflite/modelgen"
	flatbuffers "github.com/google/flatbuffers/go"
)

// FuzzFlatbufferScan feeds the scanner that reads untrusted model files
// before the runtime does (custom ops, truncated buffers): it must return,
// with an answer or an error, and never panic or run away. Seeds: a
// generated model, and the small shared models when ../shared is there.
func FuzzFlatbufferScan(f *testing.F) {
	var gen bytes.Buffer
	if err := modelgen.Write(&gen, modelgen.Spec{Width: 16, Layers: 2}); err != nil {
		f.Fatal(err)
	}
	f.Add(gen.Bytes())
	f.Add(gen.Bytes()[:gen.Len()/2])
	f.Add(opCodesModel(64, "edgetpu-custom-op"))
	if dir := os.Getenv("EDGE_AGENT_MODELS"); dir != "" {
		for _, name := range []string{"xor_model.tflite", "keras_lstm_mnist_ptq.tflite", "model_invoking_error.tflite"} {
			if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := fbReader{r: bytes.NewReader(data), size: int64(len(data))}
		ops, _ := r.customOps()
		for _, op := range ops {
			if len(op) > len(data) {
				t.Fatalf("custom op name of %d bytes from a %d-byte file", len(op), len(data))
			}
		}
		_ = r.checkBuffers()
		// The mapped scan (scanFile) reads the same as the one by syscalls.
		mapped := fbReader{size: int64(len(data)), b: data}
		v1, e1 := r.hasVariableTensors()
		v2, e2 := mapped.hasVariableTensors()
		w1, f1 := r.work()
		w2, f2 := mapped.work()
		if v1 != v2 || (e1 == nil) != (e2 == nil) || w1 != w2 || (f1 == nil) != (f2 == nil) {
			t.Fatalf("mapped scan differs: vars %v/%v (%v/%v), work %d/%d (%v/%v)", v1, v2, e1, e2, w1, w2, f1, f2)
		}
	})
}

// opCodesModel is a flatbuffer Model whose n operator codes are all CUSTOM
// and all point at one name.
func opCodesModel(n int, name string) []byte {
	b := flatbuffers.NewBuilder(1024)
	nameOff := b.CreateString(name)
	codes := make([]flatbuffers.UOffsetT, n)
	for i := range codes {
		b.StartObject(4)
		b.PrependUOffsetTSlot(slotOpCodeCustom, nameOff, 0)
		b.PrependInt32Slot(slotOpCodeBuiltin, builtinCustom, 0)
		codes[i] = b.EndObject()
	}
	b.StartVector(4, n, 4)
	for i := n - 1; i >= 0; i-- {
		b.PrependUOffsetT(codes[i])
	}
	vec := b.EndVector(n)
	b.StartObject(5)
	b.PrependUOffsetTSlot(slotModelOperatorCodes, vec, 0)
	b.Finish(b.EndObject())
	return b.FinishedBytes()
}

// A crafted file cannot make the scan quadratic: operator codes sharing a
// name read it once, and a name longer than any real op's is refused.
func TestCustomOpScanBounded(t *testing.T) {
	data := opCodesModel(50000, strings.Repeat("x", 200))
	ops, err := fbReader{r: bytes.NewReader(data), size: int64(len(data))}.customOps()
	if err != nil || len(ops) != 1 || len(ops[0]) != 200 {
		t.Fatalf("%d names, %v", len(ops), err)
	}
	data = opCodesModel(3, strings.Repeat("y", 300))
	if _, err := (fbReader{r: bytes.NewReader(data), size: int64(len(data))}).customOps(); !errors.Is(err, errCustomOpName) {
		t.Fatalf("300-byte name: %v", err)
	}
}
