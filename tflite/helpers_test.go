package tflite_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/modelgen"
)

func runFloat(t testing.TB, it *tflite.Interpreter, in []float32) []float32 {
	t.Helper()
	b := make([]byte, 4*len(in))
	for i, v := range in {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	if err := it.SetInput(0, b); err != nil {
		t.Fatal(err)
	}
	if err := it.Invoke(); err != nil {
		t.Fatal(err)
	}
	raw, err := it.CopyOutput(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tflite.Dequantize(it.Outputs()[0], raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func referenceOf(s modelgen.Spec, in []float32) []float64 { return modelgen.Reference(s, in) }
