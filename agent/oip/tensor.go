package oip

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Datatype maps a TFLite tensor type to the protocol's datatype ("" for
// one the protocol has no name for).
func Datatype(tfliteType string) string {
	return map[string]string{"bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
		"int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
		"float16": "FP16", "float32": "FP32", "float64": "FP64", "string": "BYTES"}[tfliteType]
}

// elemSize is the byte size of one element of a fixed-size datatype (0
// for BYTES or an unknown one).
func elemSize(dt string) int {
	switch dt {
	case "BOOL", "UINT8", "INT8":
		return 1
	case "UINT16", "INT16", "FP16":
		return 2
	case "UINT32", "INT32", "FP32":
		return 4
	case "UINT64", "INT64", "FP64":
		return 8
	}
	return 0
}

func elements(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 || (d > 0 && n > math.MaxInt32/d) {
			return 0, badRequest(fmt.Sprintf("shape %v is not a tensor's", shape))
		}
		n *= d
	}
	return n, nil
}

// fromJSON writes the JSON data of a tensor (a flat or nested array in
// row-major order) as little-endian bytes of dt; n elements are expected.
func fromJSON(data json.RawMessage, dt string, n int64) ([]byte, error) {
	size := elemSize(dt)
	if size == 0 || dt == "FP16" {
		return nil, badRequest(fmt.Sprintf("datatype %s is not accepted as JSON data (use the binary extension for FP16)", dt))
	}
	out := make([]byte, 0, n*int64(size))
	var count int64
	for i := 0; i < len(data); {
		switch c := data[i]; c {
		case '[', ']', ',', ' ', '\t', '\n', '\r':
			i++
			continue
		}
		j := i
		for j < len(data) && data[j] != ',' && data[j] != ']' && data[j] != ' ' && data[j] != '\n' && data[j] != '\t' && data[j] != '\r' {
			j++
		}
		if count++; count > n {
			return nil, badRequest(fmt.Sprintf("data has more than the shape's %d elements", n))
		}
		var err error
		if out, err = appendElem(out, dt, string(data[i:j])); err != nil {
			return nil, badRequest(fmt.Sprintf("data element %d: %v", count-1, err))
		}
		i = j
	}
	if count != n {
		return nil, badRequest(fmt.Sprintf("data has %d elements, the shape %d", count, n))
	}
	return out, nil
}

func appendElem(out []byte, dt, s string) ([]byte, error) {
	le := binary.LittleEndian
	switch dt {
	case "BOOL":
		switch s {
		case "true", "1":
			return append(out, 1), nil
		case "false", "0":
			return append(out, 0), nil
		}
		return nil, fmt.Errorf("%q is not a BOOL", s)
	case "FP32", "FP64":
		bits := 32
		if dt == "FP64" {
			bits = 64
		}
		f, err := strconv.ParseFloat(s, bits)
		if err != nil {
			return nil, err
		}
		if bits == 32 {
			return le.AppendUint32(out, math.Float32bits(float32(f))), nil
		}
		return le.AppendUint64(out, math.Float64bits(f)), nil
	}
	bits := 8 * elemSize(dt)
	if dt[0] == 'U' {
		v, err := strconv.ParseUint(s, 10, bits)
		if err != nil {
			return nil, err
		}
		return appendInt(out, uint64(v), bits), nil
	}
	v, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		return nil, err
	}
	return appendInt(out, uint64(v), bits), nil
}

func appendInt(out []byte, v uint64, bits int) []byte {
	le := binary.LittleEndian
	switch bits {
	case 8:
		return append(out, byte(v))
	case 16:
		return le.AppendUint16(out, uint16(v))
	case 32:
		return le.AppendUint32(out, uint32(v))
	}
	return le.AppendUint64(out, v)
}

// toJSON writes little-endian tensor bytes of dt as a flat JSON array.
func toJSON(b []byte, dt string) (json.RawMessage, error) {
	size := elemSize(dt)
	if size == 0 || dt == "FP16" || len(b)%size != 0 {
		return nil, fmt.Errorf("output datatype %s cannot be written as JSON (ask for binary_data)", dt)
	}
	le := binary.LittleEndian
	out := make([]byte, 0, 2+len(b)/size*4)
	out = append(out, '[')
	for i := 0; i < len(b); i += size {
		if i > 0 {
			out = append(out, ',')
		}
		switch dt {
		case "BOOL":
			out = strconv.AppendBool(out, b[i] != 0)
		case "FP32":
			out = strconv.AppendFloat(out, float64(math.Float32frombits(le.Uint32(b[i:]))), 'g', -1, 32)
		case "FP64":
			out = strconv.AppendFloat(out, math.Float64frombits(le.Uint64(b[i:])), 'g', -1, 64)
		case "UINT8":
			out = strconv.AppendUint(out, uint64(b[i]), 10)
		case "UINT16":
			out = strconv.AppendUint(out, uint64(le.Uint16(b[i:])), 10)
		case "UINT32":
			out = strconv.AppendUint(out, uint64(le.Uint32(b[i:])), 10)
		case "UINT64":
			out = strconv.AppendUint(out, le.Uint64(b[i:]), 10)
		case "INT8":
			out = strconv.AppendInt(out, int64(int8(b[i])), 10)
		case "INT16":
			out = strconv.AppendInt(out, int64(int16(le.Uint16(b[i:]))), 10)
		case "INT32":
			out = strconv.AppendInt(out, int64(int32(le.Uint32(b[i:]))), 10)
		case "INT64":
			out = strconv.AppendInt(out, int64(le.Uint64(b[i:])), 10)
		}
	}
	return append(out, ']'), nil
}
