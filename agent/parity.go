package agent

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/tflite"
)

// Parity is how an update answered recent real requests next to the
// serving version.
type Parity struct {
	Replayed  int     `json:"replayed"`
	Agreed    int     `json:"agreed"`    // same top-1 class
	Agreement float64 `json:"agreement"` // Agreed / Replayed
	// MaxAbsDiff is the largest difference between the two versions'
	// dequantized outputs, over requests whose outputs have the same size
	// (for models that are not classifiers); -1 when none had.
	MaxAbsDiff float64 `json:"max_abs_diff"`
	// NewFailed counts requests the serving version answered and the new
	// one could not (an image for a model whose input is no image...).
	NewFailed int `json:"new_failed"`
	Skipped   int `json:"skipped"` // the serving version failed them too
}

// paritySample is one recent request as sent: the image (so it can be
// prepared for either version) or the raw tensor.
type paritySample struct {
	image, tensor []byte
}

// parityRing keeps the last requests per model (at most max each) and at
// most maxBytes in all, in memory only (requests are never stored). When
// the bytes run out, the model holding the most gives up its oldest.
type parityRing struct {
	mu       sync.Mutex
	max      int
	maxBytes int64
	total    int64
	samples  map[string][]paritySample
	bytes    map[string]int64
}

func newParityRing(n int, maxBytes int64) *parityRing {
	return &parityRing{max: n, maxBytes: maxBytes, samples: map[string][]paritySample{}, bytes: map[string]int64{}}
}

// add keeps one request to model. The slices are kept as they are, not
// copied: a command's payload is its own allocation, never reused.
func (r *parityRing) add(model string, image, tensor []byte) {
	size := int64(len(image) + len(tensor))
	if r.max == 0 || size > r.maxBytes {
		return
	}
	s := paritySample{image: image, tensor: tensor}
	if len(image) == 0 {
		s.image = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples[model] = append(r.samples[model], s)
	r.bytes[model] += size
	r.total += size
	if len(r.samples[model]) > r.max {
		r.dropOldest(model)
	}
	for r.total > r.maxBytes {
		r.dropOldest(r.largest())
	}
}

func (r *parityRing) dropOldest(model string) {
	list := r.samples[model]
	size := int64(len(list[0].image) + len(list[0].tensor))
	r.samples[model] = list[1:]
	r.bytes[model] -= size
	r.total -= size
}

func (r *parityRing) largest() string {
	best := ""
	for m, b := range r.bytes {
		if best == "" || b > r.bytes[best] {
			best = m
		}
	}
	return best
}

func (r *parityRing) snapshot(model string) []paritySample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]paritySample(nil), r.samples[model]...)
}

func (r *parityRing) forget(model string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total -= r.bytes[model]
	delete(r.samples, model)
	delete(r.bytes, model)
}

// replayParity runs model id's recent requests, as they were sent, through
// the serving version and the staged one and compares their answers. A
// request the new version cannot take (a raw tensor of the old input size,
// an image for a model whose input is no image) counts in NewFailed: even
// with allow_signature_change, what clients send must still be answered.
func (a *Agent) replayParity(ctx context.Context, id, staged string) Parity {
	p := Parity{MaxAbsDiff: -1}
	for _, s := range a.parity.snapshot(id) {
		if ctx.Err() != nil {
			break
		}
		req := infer.Request{Tensor: s.tensor, Raw: true}
		var d *infer.Decoded
		if s.image != nil {
			var err error
			if d, err = a.decodes.Decode(ctx, s.image, a.config().Infer.MaxImagePixels); err != nil {
				p.Skipped++
				continue
			}
			req = infer.Request{Image: d.Image, Raw: true}
		}
		old, err := a.runOn(ctx, id, req)
		if err != nil {
			d.Release()
			p.Skipped++
			continue
		}
		neu, err := a.runOn(ctx, staged, req)
		d.Release()
		if err != nil {
			if ctx.Err() == nil {
				p.NewFailed++
			}
			continue
		}
		agree, diff, err := compareOutputs(old, neu)
		if err != nil {
			p.Skipped++
			continue
		}
		p.Replayed++
		if agree {
			p.Agreed++
		}
		if diff >= 0 {
			p.MaxAbsDiff = math.Max(p.MaxAbsDiff, diff)
		}
	}
	if p.Replayed > 0 {
		p.Agreement = float64(p.Agreed) / float64(p.Replayed)
	}
	return p
}

// compareOutputs reports whether two answers have the same top-1 class and
// their largest difference (-1 when the outputs differ in size).
func compareOutputs(x, y infer.Result) (bool, float64, error) {
	a, err := tflite.Dequantize(x.Output, x.Raw, nil)
	if err != nil {
		return false, 0, err
	}
	b, err := tflite.Dequantize(y.Output, y.Raw, nil)
	if err != nil {
		return false, 0, err
	}
	if len(a) == 0 || len(b) == 0 {
		return false, 0, fmt.Errorf("empty output")
	}
	agree := argmax(a) == argmax(b)
	if len(a) != len(b) {
		return agree, -1, nil
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return agree, d, nil
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
