package oip

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

func TestJSONTensorsRoundTrip(t *testing.T) {
	le := binary.LittleEndian
	for _, c := range []struct {
		dt, data string
		n        int64
		want     []byte
	}{
		{"UINT8", "[[1, 2], [3, 255]]", 4, []byte{1, 2, 3, 255}},
		{"INT8", "[-128,0,127]", 3, []byte{0x80, 0, 127}},
		{"BOOL", "[true,false]", 2, []byte{1, 0}},
		{"INT16", "[-2]", 1, le.AppendUint16(nil, 0xfffe)},
		{"UINT32", "[4000000000]", 1, le.AppendUint32(nil, 4000000000)},
		{"INT64", "[-1]", 1, le.AppendUint64(nil, math.MaxUint64)},
		{"FP32", "[0.5, -1.25e2]", 2, le.AppendUint32(le.AppendUint32(nil, math.Float32bits(0.5)), math.Float32bits(-125))},
		{"FP64", "[1e-300]", 1, le.AppendUint64(nil, math.Float64bits(1e-300))},
	} {
		got, err := fromJSON([]byte(c.data), c.dt, c.n)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("%s %s: %v %v, want %v", c.dt, c.data, got, err, c.want)
			continue
		}
		back, err := toJSON(got, c.dt)
		if err != nil {
			t.Errorf("%s: toJSON: %v", c.dt, err)
			continue
		}
		again, err := fromJSON(back, c.dt, c.n)
		if err != nil || !bytes.Equal(again, c.want) {
			t.Errorf("%s: %s does not read back: %v %v", c.dt, back, again, err)
		}
	}
}

func TestJSONTensorsRefused(t *testing.T) {
	for _, c := range []struct {
		dt, data string
		n        int64
	}{
		{"UINT8", "[256]", 1},
		{"UINT8", "[-1]", 1},
		{"INT8", "[1.5]", 1},
		{"UINT8", "[1,2,3]", 2},
		{"UINT8", "[1]", 2},
		{"BOOL", "[2]", 1},
		{"FP32", `["x"]`, 1},
		{"FP16", "[1]", 1},
		{"BYTES", `["a"]`, 1},
	} {
		if _, err := fromJSON([]byte(c.data), c.dt, c.n); code(err) != "bad_request" {
			t.Errorf("%s %s (n %d): %v, want bad_request", c.dt, c.data, c.n, err)
		}
	}
}

// No JSON data crashes the reader or makes it write other than n
// elements.
func FuzzFromJSON(f *testing.F) {
	for _, s := range []string{"[1,2,3]", "[[1],[2],[3]]", "[1e400, -0]", "[,,]", "[true]"} {
		f.Add([]byte(s), uint8(3))
	}
	types := []string{"BOOL", "UINT8", "INT8", "INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64", "FP32", "FP64"}
	f.Fuzz(func(t *testing.T, data []byte, n uint8) {
		dt := types[int(n)%len(types)]
		out, err := fromJSON(data, dt, int64(n%8))
		if err == nil && len(out) != int(n%8)*elemSize(dt) {
			t.Fatalf("%s %q: %d bytes for %d elements", dt, data, len(out), n%8)
		}
	})
}

func TestStatusOf(t *testing.T) {
	for c, want := range map[string]int{"bad_request": 400, "input_size": 400, "input_whatever": 400, "unknown_model": 404,
		"payload_too_large": 413, "input_too_large": 413, "over_budget": 503, "busy": 503, "model_invalid": 500, "internal": 500} {
		if got := StatusOf(c); got != want {
			t.Errorf("StatusOf(%q) = %d, want %d", c, got, want)
		}
	}
}
