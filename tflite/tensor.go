package tflite

import (
	"encoding/binary"
	"fmt"
	"math"

	tfl "github.com/tphakala/go-tflite"
)

// TensorInfo describes a tensor. Its JSON form is part of the CLI's stable
// output.
type TensorInfo struct {
	Name  string        `json:"name"`
	Type  string        `json:"type"` // float32, uint8, int8, int32, ...
	Shape []int         `json:"shape"`
	Bytes int           `json:"bytes"`
	Quant *Quantization `json:"quantization,omitempty"`
}

// Quantization maps stored values q to real values: scale * (q - zero_point).
type Quantization struct {
	Scale     float64 `json:"scale"`
	ZeroPoint int     `json:"zero_point"`
}

func tensorInfo(t *tfl.Tensor) TensorInfo {
	if t == nil {
		return TensorInfo{}
	}
	info := TensorInfo{Name: t.Name(), Type: typeName(t.Type()), Shape: t.Shape(), Bytes: int(t.ByteSize())}
	if q := t.QuantizationParams(); q.Scale != 0 {
		info.Quant = &Quantization{Scale: q.Scale, ZeroPoint: q.ZeroPoint}
	}
	return info
}

// typeName follows TfLiteType's names in lower case.
func typeName(t tfl.TensorType) string {
	names := map[tfl.TensorType]string{
		tfl.NoType: "notype", tfl.Float32: "float32", tfl.Int32: "int32", tfl.UInt8: "uint8",
		tfl.Int64: "int64", tfl.String: "string", tfl.Bool: "bool", tfl.Int16: "int16",
		tfl.Complex64: "complex64", tfl.Int8: "int8", 10: "float16", 11: "float64",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type%d", int(t))
}

// Elements is the number of values in the tensor.
func (t TensorInfo) Elements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Dequantize turns raw tensor bytes into real values, applying the tensor's
// quantization when it has one.
func Dequantize(t TensorInfo, raw []byte, dst []float32) ([]float32, error) {
	n := t.Elements()
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	scale, zp := 1.0, 0
	if t.Quant != nil {
		scale, zp = t.Quant.Scale, t.Quant.ZeroPoint
	}
	switch t.Type {
	case "float32":
		if len(raw) < 4*n {
			return nil, &Error{Op: "dequantize", Kind: ErrInputSize, Detail: fmt.Sprintf("%d bytes for %d float32", len(raw), n)}
		}
		for i := range n {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case "uint8":
		if len(raw) < n {
			return nil, &Error{Op: "dequantize", Kind: ErrInputSize, Detail: fmt.Sprintf("%d bytes for %d uint8", len(raw), n)}
		}
		for i := range n {
			dst[i] = float32(scale * float64(int(raw[i])-zp))
		}
	case "int8":
		if len(raw) < n {
			return nil, &Error{Op: "dequantize", Kind: ErrInputSize, Detail: fmt.Sprintf("%d bytes for %d int8", len(raw), n)}
		}
		for i := range n {
			dst[i] = float32(scale * float64(int(int8(raw[i]))-zp))
		}
	default:
		return nil, &Error{Op: "dequantize", Kind: ErrTensorType, Detail: t.Type}
	}
	return dst, nil
}
