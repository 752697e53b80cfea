package infer

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"sync"

	"github.com/edge-agent/edge-agent/errcode"
)

// ErrMemoryPressure: the agent is shedding load because its cgroup is
// short of memory; decodes are refused until the pressure drops.
var ErrMemoryPressure = errcode.New("memory_pressure", "memory pressure: new image decodes are refused for now; retry later")

// DecodeBudget is the one budget every image decode in flight shares: a
// decode takes its estimated cost (EstimateCost: the decode or the image
// with its resize, whichever is more) before it reads pixel data and holds
// the image's part until Release. A decode that can never fit is refused
// at once (input_too_large); one that fits waits, first come first
// served, until it does or its context ends. A nil *DecodeBudget decodes
// without bounds. Safe for concurrent use.
type DecodeBudget struct {
	size int64

	// mu guards the fields below.
	mu      sync.Mutex
	used    int64
	peak    int64
	waiters []*decodeWaiter // FIFO
	shed    bool
	stats   DecodeStats
}

type decodeWaiter struct {
	n     int64
	ready chan struct{} // closed when n is granted
}

// DecodeStats counts what the budget did since it was made.
type DecodeStats struct {
	BudgetBytes int64 `json:"budget_bytes"`
	InUseBytes  int64 `json:"in_use_bytes"`
	// PeakBytes is the most held at once.
	PeakBytes int64  `json:"peak_bytes"`
	Waiting   int    `json:"waiting"`
	Decodes   uint64 `json:"decodes"`
	Waited    uint64 `json:"waited"`    // decodes that queued for room
	TooLarge  uint64 `json:"too_large"` // refused: can never fit
	Shed      uint64 `json:"shed"`      // refused under memory pressure
	Shedding  bool   `json:"shedding"`
}

// NewDecodeBudget makes a budget of size bytes (> 0).
func NewDecodeBudget(size int64) *DecodeBudget {
	return &DecodeBudget{size: max(size, 1)}
}

// Size is the budget in bytes (0 for a nil budget: unbounded).
func (b *DecodeBudget) Size() int64 {
	if b == nil {
		return 0
	}
	return b.size
}

// Stats returns the counters and what is held now.
func (b *DecodeBudget) Stats() DecodeStats {
	if b == nil {
		return DecodeStats{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.BudgetBytes, s.InUseBytes, s.PeakBytes, s.Waiting, s.Shedding = b.size, b.used, b.peak, len(b.waiters), b.shed
	return s
}

// SetShedding turns the refusal of new decodes (ErrMemoryPressure) on or
// off; decodes already admitted or waiting go on.
func (b *DecodeBudget) SetShedding(on bool) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.shed = on
	b.mu.Unlock()
}

// acquire takes n bytes, waiting for room until ctx ends.
func (b *DecodeBudget) acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.size {
		b.takeLocked(n)
		b.mu.Unlock()
		return nil
	}
	w := &decodeWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.stats.Waited++
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			b.mu.Unlock()
			b.release(n)
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
			b.grantLocked() // the head may have changed
			b.mu.Unlock()
		}
		return ctx.Err()
	}
}

func (b *DecodeBudget) takeLocked(n int64) {
	b.used += n
	b.peak = max(b.peak, b.used)
}

// grantLocked admits waiters in order while the head fits.
func (b *DecodeBudget) grantLocked() {
	for len(b.waiters) > 0 && b.used+b.waiters[0].n <= b.size {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.takeLocked(w.n)
		close(w.ready)
	}
}

func (b *DecodeBudget) release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.grantLocked()
	b.mu.Unlock()
}

// Decoded is an image decoded under a budget; Release gives back what it
// holds once the image is no longer used (resized into every model that
// needs it). Release is idempotent; a nil *Decoded releases nothing.
type Decoded struct {
	Image image.Image
	Cost  Cost

	b    *DecodeBudget
	held int64
	once sync.Once
}

// Release returns the image's share of the budget.
func (d *Decoded) Release() {
	if d == nil || d.b == nil {
		return
	}
	d.once.Do(func() { d.b.release(d.held) })
}

// Decode decodes BMP, PNG or JPEG bytes from a client: at most maxPixels
// pixels (0: DefaultMaxPixels), and only once their estimated cost has
// room in b (waiting for it until ctx ends). The caller must Release the
// result when done with its image.
func (b *DecodeBudget) Decode(ctx context.Context, data []byte, maxPixels int) (*Decoded, error) {
	const path = "(request)"
	if f := sniff(data); f != "bmp" && f != "png" && f != "jpeg" {
		if f == "" {
			f = "unknown"
		}
		return nil, &InputError{Path: path, Kind: ErrUnsupportedInput, Detail: f + " content (use BMP, PNG or JPEG)"}
	}
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, &InputError{Path: path, Kind: ErrImageDecode, Detail: err.Error(), Err: err}
	}
	if err := checkSize(cfg, maxPixels); err != nil {
		return nil, &InputError{Path: path, Kind: ErrInputTooLarge, Detail: err.Error()}
	}
	cost, err := EstimateCost(data)
	if err != nil {
		return nil, &InputError{Path: path, Kind: ErrImageDecode, Detail: err.Error(), Err: err}
	}
	if b == nil {
		img, err := decodeChecked(data, path)
		if err != nil {
			return nil, err
		}
		return &Decoded{Image: img, Cost: cost}, nil
	}
	peak := cost.Peak()
	b.mu.Lock()
	b.stats.Decodes++
	switch {
	case peak > b.size:
		b.stats.TooLarge++
		b.mu.Unlock()
		return nil, &InputError{Path: path, Kind: ErrInputTooLarge,
			Detail: fmt.Sprintf("decoding it takes %s (%v), more than the decode budget of %s", mib(peak), cost, mib(b.size))}
	case b.shed:
		b.stats.Shed++
		b.mu.Unlock()
		return nil, fmt.Errorf("decode %s: %w", cost, ErrMemoryPressure)
	}
	b.mu.Unlock()
	if err := b.acquire(ctx, peak); err != nil {
		return nil, fmt.Errorf("waiting for the decode budget (%s of %s): %w", mib(peak), mib(b.size), err)
	}
	img, err := decodeChecked(data, path)
	if err != nil {
		b.release(peak)
		return nil, err
	}
	// The decoder's scratch is garbage now; the image and its resize stay.
	keep := min(peak, cost.Image+cost.Resize)
	b.release(peak - keep)
	return &Decoded{Image: img, Cost: cost, b: b, held: keep}, nil
}

// decodeChecked decodes data whose header was checked.
func decodeChecked(data []byte, path string) (image.Image, error) {
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, &InputError{Path: path, Kind: ErrImageDecode, Detail: err.Error(), Err: err}
	}
	return img, nil
}
