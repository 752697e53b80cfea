package agent

import (
	"strconv"
	"testing"

	"github.com/edge-agent/edge-agent/tflite"
)

// FuzzCommandDecoding: strict decoding of a command's JSON either yields
// a request whose fields pass their own checks or a bad_request, never a
// panic.
func FuzzCommandDecoding(f *testing.F) {
	for _, s := range []string{`{}`, `{"id":"r1","model":"v2","image":"Qk0=","top":3}`, `{"schema":1,"model":"x","input":"AAAA"}`,
		`{"model":"../etc"}`, `{"schema":9}`, `{"top":-1}`, `{} trailing`, `{"budget":"256MiB"}`, `{"budget":1e30}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var req struct {
			envelope
			Model string `json:"model"`
			Input string `json:"input"`
			Image string `json:"image"`
			Top   int    `json:"top"`
			Raw   bool   `json:"raw"`
		}
		if err := decodeStrict(payload, &req); err != nil {
			if code := tflite.Code(err); code != "bad_request" {
				t.Fatalf("decode error with code %q: %v", code, err)
			}
			return
		}
		if err := checkModelID(req.Model); err == nil && !ValidModelID(req.Model) {
			t.Fatalf("model id %q passed", req.Model)
		}
		var b struct {
			envelope
			Budget []byte `json:"budget"`
		}
		_ = decodeStrict(payload, &b)
	})
}

// FuzzParseByteSize: sizes parse to a non-negative count (or "auto") and
// whole numbers of bytes round-trip.
func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"256MiB", "1.5GiB", "100MB", "0", "auto", "  12 k ", "9999999999999GiB", "-1", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBudget(s)
		if err != nil {
			return
		}
		if n < 0 && n != AutoBudget {
			t.Fatalf("%q parsed to %d", s, n)
		}
		if n >= 0 {
			back, err := ParseByteSize(strconv.FormatInt(int64(n), 10))
			if err != nil || back != n {
				t.Fatalf("%q → %d → %d, %v", s, n, back, err)
			}
		}
	})
}
