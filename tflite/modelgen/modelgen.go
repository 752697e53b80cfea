// Package modelgen writes valid TensorFlow Lite models of any size: a stack
// of float32 FULLY_CONNECTED layers with deterministic weights. They give a
// fresh machine a model to run and the benchmarks models from KiBs to
// hundreds of MiBs. It needs no runtime (no cgo).
package modelgen

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	flatbuffers "github.com/google/flatbuffers/go"
)

// Schema constants from tensorflow/lite/schema/schema.fbs.
const (
	tensorFloat32               = 0
	opFullyConnected            = 9
	optionsFullyConnected       = 8
	activationRelu              = 1
	schemaVersion               = 3
	maxWidth                    = 1024
	minWidth                    = 16
	fileIdentifier              = "TFL3"
	bufferAlignment             = 16
	MaxSize               int64 = 1 << 30 // flatbuffers address at most 2 GiB; keep well inside
)

// Spec is the shape of a generated model.
type Spec struct {
	Width  int // features per layer: input [1,Width], output [1,Width]
	Layers int // FULLY_CONNECTED layers, each with Width×Width weights and Width biases
	// Seed varies the weights (0: the weights of Weight): models of the
	// same size with other seeds are other files (the bench's zoos).
	Seed int64
}

// ForSize picks the spec whose file is closest to size bytes: the widest
// layer (up to 1024) that fits once, then as many layers as make up size.
func ForSize(size int64) (Spec, error) {
	if size <= 0 || size > MaxSize {
		return Spec{}, fmt.Errorf("model size %d out of range (1..%d bytes)", size, MaxSize)
	}
	w := maxWidth
	for w > minWidth && layerBytes(w) > size {
		w /= 2
	}
	layers := int(math.Round(float64(size) / float64(layerBytes(w))))
	return Spec{Width: w, Layers: max(layers, 1)}, nil
}

func layerBytes(w int) int64 { return int64(4 * (w*w + w)) }

// Weight is the deterministic value of weight i of layer l: small enough
// that activations stay finite through any number of layers.
func Weight(l, i, width int) float32 { return seededWeight(0, l, i, width) }

// seededWeight is Weight shifted by a seed.
func seededWeight(seed int64, l, i, width int) float32 {
	shift := int(uint64(seed) % 2001)
	v := (i*7919 + l*104729 + shift*15485) % 2001
	return float32(v-1000) / 1000 / float32(width)
}

// Write encodes the model described by s to w.
func Write(w io.Writer, s Spec) error {
	if s.Width < 1 || s.Layers < 1 {
		return fmt.Errorf("model spec %+v: width and layers must be positive", s)
	}
	if total := layerBytes(s.Width) * int64(s.Layers); total > MaxSize {
		return fmt.Errorf("model spec %+v: %d bytes of weights exceed %d", s, total, MaxSize)
	}
	b := flatbuffers.NewBuilder(int(layerBytes(s.Width))*s.Layers + 64<<10)

	// Buffers: 0 is the empty sentinel the schema reserves; then weights and
	// bias of each layer.
	bufs := []flatbuffers.UOffsetT{emptyBuffer(b)}
	scratch := make([]byte, 4*s.Width*s.Width)
	for l := 0; l < s.Layers; l++ {
		wts := scratch[:4*s.Width*s.Width]
		for i := 0; i < s.Width*s.Width; i++ {
			binary.LittleEndian.PutUint32(wts[4*i:], math.Float32bits(seededWeight(s.Seed, l, i, s.Width)))
		}
		bufs = append(bufs, dataBuffer(b, wts))
		bias := scratch[:4*s.Width]
		for i := 0; i < s.Width; i++ {
			binary.LittleEndian.PutUint32(bias[4*i:], math.Float32bits(0.01))
		}
		bufs = append(bufs, dataBuffer(b, bias))
	}

	// Tensors: activations 0..Layers (0 is the input), then per layer its
	// weights and bias.
	var tensors []flatbuffers.UOffsetT
	for i := 0; i <= s.Layers; i++ {
		name := fmt.Sprintf("act%d", i)
		switch i {
		case 0:
			name = "input"
		case s.Layers:
			name = "output"
		}
		tensors = append(tensors, tensor(b, name, []int32{1, int32(s.Width)}, 0))
	}
	for l := 0; l < s.Layers; l++ {
		tensors = append(tensors,
			tensor(b, fmt.Sprintf("fc%d/weights", l), []int32{int32(s.Width), int32(s.Width)}, uint32(1+2*l)),
			tensor(b, fmt.Sprintf("fc%d/bias", l), []int32{int32(s.Width)}, uint32(2+2*l)))
	}

	var ops []flatbuffers.UOffsetT
	for l := 0; l < s.Layers; l++ {
		weights := int32(s.Layers + 1 + 2*l)
		// ReLU between layers keeps the graph from being one linear map;
		// the last layer is linear.
		act := byte(activationRelu)
		if l == s.Layers-1 {
			act = 0
		}
		ops = append(ops, fullyConnected(b, []int32{int32(l), weights, weights + 1}, int32(l+1), act))
	}

	tensorsVec := offsets(b, tensors)
	inputs := int32s(b, []int32{0})
	outputs := int32s(b, []int32{int32(s.Layers)})
	opsVec := offsets(b, ops)
	name := b.CreateString("main")
	b.StartObject(5) // SubGraph
	b.PrependUOffsetTSlot(0, tensorsVec, 0)
	b.PrependUOffsetTSlot(1, inputs, 0)
	b.PrependUOffsetTSlot(2, outputs, 0)
	b.PrependUOffsetTSlot(3, opsVec, 0)
	b.PrependUOffsetTSlot(4, name, 0)
	subgraph := b.EndObject()

	b.StartObject(4) // OperatorCode
	b.PrependInt8Slot(0, opFullyConnected, 0)
	b.PrependInt32Slot(2, 1, 1)
	b.PrependInt32Slot(3, opFullyConnected, 0)
	opcode := b.EndObject()

	opcodes := offsets(b, []flatbuffers.UOffsetT{opcode})
	subgraphs := offsets(b, []flatbuffers.UOffsetT{subgraph})
	buffers := offsets(b, bufs)
	desc := b.CreateString(fmt.Sprintf("edge-agent demo: %d x FULLY_CONNECTED %dx%d float32", s.Layers, s.Width, s.Width))
	b.StartObject(5) // Model
	b.PrependUint32Slot(0, schemaVersion, 0)
	b.PrependUOffsetTSlot(1, opcodes, 0)
	b.PrependUOffsetTSlot(2, subgraphs, 0)
	b.PrependUOffsetTSlot(3, desc, 0)
	b.PrependUOffsetTSlot(4, buffers, 0)
	model := b.EndObject()
	b.FinishWithFileIdentifier(model, []byte(fileIdentifier))

	if _, err := w.Write(b.FinishedBytes()); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	return nil
}

func emptyBuffer(b *flatbuffers.Builder) flatbuffers.UOffsetT {
	b.StartObject(1)
	return b.EndObject()
}

// dataBuffer stores data 16-byte aligned, as the schema's force_align asks,
// so the runtime can use the weights in place from the mapping.
func dataBuffer(b *flatbuffers.Builder, data []byte) flatbuffers.UOffsetT {
	b.Prep(bufferAlignment, len(data))
	vec := b.CreateByteVector(data)
	b.StartObject(1)
	b.PrependUOffsetTSlot(0, vec, 0)
	return b.EndObject()
}

func tensor(b *flatbuffers.Builder, name string, shape []int32, buffer uint32) flatbuffers.UOffsetT {
	n := b.CreateString(name)
	sh := int32s(b, shape)
	b.StartObject(4)
	b.PrependUOffsetTSlot(0, sh, 0)
	b.PrependByteSlot(1, tensorFloat32, 0)
	b.PrependUint32Slot(2, buffer, 0)
	b.PrependUOffsetTSlot(3, n, 0)
	return b.EndObject()
}

func fullyConnected(b *flatbuffers.Builder, inputs []int32, output int32, act byte) flatbuffers.UOffsetT {
	in := int32s(b, inputs)
	out := int32s(b, []int32{output})
	b.StartObject(1) // FullyConnectedOptions
	b.PrependByteSlot(0, act, 0)
	opts := b.EndObject()
	b.StartObject(5) // Operator
	b.PrependUint32Slot(0, 0, 0)
	b.PrependUOffsetTSlot(1, in, 0)
	b.PrependUOffsetTSlot(2, out, 0)
	b.PrependByteSlot(3, optionsFullyConnected, 0)
	b.PrependUOffsetTSlot(4, opts, 0)
	return b.EndObject()
}

func int32s(b *flatbuffers.Builder, v []int32) flatbuffers.UOffsetT {
	b.StartVector(4, len(v), 4)
	for i := len(v) - 1; i >= 0; i-- {
		b.PrependInt32(v[i])
	}
	return b.EndVector(len(v))
}

func offsets(b *flatbuffers.Builder, v []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	b.StartVector(4, len(v), 4)
	for i := len(v) - 1; i >= 0; i-- {
		b.PrependUOffsetT(v[i])
	}
	return b.EndVector(len(v))
}

// Reference computes what the model outputs for input, in float64, so tests
// can check the runtime's answer.
func Reference(s Spec, input []float32) []float64 {
	act := make([]float64, s.Width)
	for i := range act {
		act[i] = float64(input[i])
	}
	next := make([]float64, s.Width)
	for l := 0; l < s.Layers; l++ {
		for o := 0; o < s.Width; o++ {
			sum := 0.01
			for i := 0; i < s.Width; i++ {
				sum += float64(seededWeight(s.Seed, l, o*s.Width+i, s.Width)) * act[i]
			}
			if l < s.Layers-1 && sum < 0 {
				sum = 0
			}
			next[o] = sum
		}
		act, next = next, act
	}
	return act
}
