package update

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
	Skipped   int `json:"skipped"` // the serving version failed them too, or not comparable
}

// paritySample is one recent request as sent: the image (so it can be
// prepared for either version) or the raw tensor, with the serving
// version's answer to it. An update is checked against the recorded
// answers, so the serving version need not be warm beside it.
type paritySample struct {
	image, tensor []byte
	answer        *answer // nil: not recorded (not comparable)
}

// answer is what one version answered a request: its top-1 class and, for
// the differences, the first answerSample dequantized outputs.
type answer struct {
	version string // the digest of the version that answered
	top1    int
	n       int       // the output's length
	sample  []float32 // its first min(n, answerSample) values
}

// answerSample bounds the outputs kept per request: a classifier's 1001
// scores whole, a larger tensor's first 4 KiB.
const answerSample = 1024

// newAnswer reads res as version's answer; nil when its output is not
// numeric.
func newAnswer(version string, res infer.Result) *answer {
	v, err := tflite.Dequantize(res.Output, res.Raw, nil)
	if err != nil || len(v) == 0 {
		return nil
	}
	return &answer{version: version, top1: argmax(v), n: len(v), sample: append([]float32(nil), v[:min(len(v), answerSample)]...)}
}

// recordParity keeps a request that version of model answered, with the
// answer.
func (m *Manager) recordParity(model, version string, image, tensor []byte, res infer.Result) {
	if !m.parity.enabled() {
		return
	}
	m.parity.record(model, paritySample{image: image, tensor: tensor, answer: newAnswer(version, res)})
}

func (s paritySample) size() int64 {
	n := int64(len(s.image) + len(s.tensor))
	if s.answer != nil {
		n += int64(4*len(s.answer.sample) + len(s.answer.version))
	}
	return n
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

// add keeps one request to model, without its answer.
func (r *parityRing) add(model string, image, tensor []byte) {
	r.record(model, paritySample{image: image, tensor: tensor})
}

// enabled reports whether the ring keeps anything (the answer need not be
// read otherwise).
func (r *parityRing) enabled() bool { return r.max > 0 }

// record keeps one request to model. The slices are kept as they are, not
// copied: a command's payload is its own allocation, never reused.
func (r *parityRing) record(model string, s paritySample) {
	size := s.size()
	if r.max == 0 || size > r.maxBytes {
		return
	}
	if len(s.image) == 0 {
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
	size := list[0].size()
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

// replayParity runs model id's recent requests, as they were sent,
// through the staged version and compares its answers with those the
// serving version gave, recorded when it answered. A request an earlier
// version answered (the ring right after a swap) is run through the
// serving version too when runServing (it is warm beside the update), and
// passed over otherwise (it was drained to check the update alone). A
// request the new version cannot take (a raw tensor of the old input size,
// an image for a model whose input is no image) counts in NewFailed: even
// with allow_signature_change, what clients send must still be answered.
func (m *Manager) replayParity(ctx context.Context, id, serving, staged string, runServing bool) Parity {
	p := Parity{MaxAbsDiff: -1}
	for _, s := range m.parity.snapshot(id) {
		if ctx.Err() != nil {
			break
		}
		recorded := s.answer != nil && s.answer.version == serving
		if !recorded && !runServing {
			continue
		}
		req := infer.Request{Tensor: s.tensor, Raw: true}
		var d *infer.Decoded
		if s.image != nil {
			var err error
			if d, err = m.o.Decodes().Decode(ctx, s.image, m.settings().MaxImagePixels); err != nil {
				p.Skipped++
				continue
			}
			req = infer.Request{Image: d.Image, Raw: true}
		}
		want := s.answer
		if !recorded {
			res, err := RunOn(ctx, m.pool(), id, req)
			if want = newAnswer(serving, res); err != nil || want == nil {
				d.Release()
				p.Skipped++ // the serving version cannot answer it either
				continue
			}
		}
		neu, err := RunOn(ctx, m.pool(), staged, req)
		d.Release()
		if err != nil {
			if ctx.Err() == nil {
				p.NewFailed++
			}
			continue
		}
		agree, diff, err := compareAnswer(want, neu)
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

// compareAnswer reports whether y has the recorded answer's top-1 class
// and the largest difference over the recorded sample (-1 when the
// outputs differ in size).
func compareAnswer(x *answer, y infer.Result) (bool, float64, error) {
	b, err := tflite.Dequantize(y.Output, y.Raw, nil)
	if err != nil {
		return false, 0, err
	}
	if len(b) == 0 {
		return false, 0, fmt.Errorf("empty output")
	}
	agree := x.top1 == argmax(b)
	if x.n != len(b) {
		return agree, -1, nil
	}
	d := 0.0
	for i, v := range x.sample {
		d = math.Max(d, math.Abs(float64(v-b[i])))
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
