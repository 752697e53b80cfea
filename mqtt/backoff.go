package mqtt

import "time"

// backoff is full-jitter exponential backoff: the n-th wait is uniformly
// random in [0, min(max, min·2ⁿ)). A fleet that lost its broker together
// then comes back spread over the window instead of in lockstep, and the
// broker sees a trickle of reconnects rather than a storm.
type backoff struct {
	min, max time.Duration
	n        int
	rand     func() float64 // in [0,1)
}

// next is how long to wait before the next attempt.
func (b *backoff) next() time.Duration {
	ceil := b.max
	if b.n < 32 && b.min<<b.n < b.max && b.min<<b.n > 0 {
		ceil = b.min << b.n
	}
	b.n++
	return time.Duration(b.rand() * float64(ceil))
}

// reset starts over after a connection that worked.
func (b *backoff) reset() { b.n = 0 }
