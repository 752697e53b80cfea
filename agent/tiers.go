package agent

import (
	"context"
	"fmt"
	"sync"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/agent/update"
)

// Parity guards for tiered serving: a family's fast variant answers while
// its precise one is not warm. A sample of those answers is run through
// the precise variant once it is warm, so the agent knows how often the
// fast path agrees; a request waits for the precise variant instead when
// that agreement is too low or the fast answer is unsure.

// TierStats is what the agent measured of one family's fast path.
type TierStats struct {
	Samples   int     `json:"samples"` // fast answers checked against the precise variant
	Agreed    int     `json:"agreed"`
	Agreement float64 `json:"agreement"` // Agreed / Samples
	// DisagreedScores counts the fast variant's top score, in tenths
	// (index 0: 0–0.1 … 9: 0.9–1.0), over the answers that disagreed.
	DisagreedScores [10]int `json:"disagreed_scores"`
	Pending         int     `json:"pending"`   // samples waiting for the precise variant
	Escalated       int     `json:"escalated"` // requests that waited for the precise variant
	TimedOut        int     `json:"timed_out"` // of those, answered by the fast one after escalate_wait
}

// tierSample is one fast answer kept for checking.
type tierSample struct {
	image, tensor []byte
	top           int
	score         float64
}

// maxTierPending bounds the samples kept per family.
const maxTierPending = 32

// tiers holds the fast-path statistics and samples of every family.
type tiers struct {
	mu      sync.Mutex
	stats   map[string]*TierStats
	pending map[string][]tierSample
	running map[string]bool // a family's samples are being checked
}

func newTiers() *tiers {
	return &tiers{stats: map[string]*TierStats{}, pending: map[string][]tierSample{}, running: map[string]bool{}}
}

func (t *tiers) statsOf(family string) *TierStats {
	s, ok := t.stats[family]
	if !ok {
		s = &TierStats{}
		t.stats[family] = s
	}
	return s
}

// snapshot copies every family's statistics.
func (t *tiers) snapshot() map[string]TierStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]TierStats, len(t.stats))
	for f, s := range t.stats {
		c := *s
		c.Pending = len(t.pending[f])
		out[f] = c
	}
	return out
}

// escalation says why a request to family f should wait for the precise
// variant instead of taking the fast answer res ("" when it need not).
func (a *Agent) escalation(f FamilyConfig, res *infer.Result) string {
	a.tiers.mu.Lock()
	s := *a.tiers.statsOf(f.ID)
	a.tiers.mu.Unlock()
	if f.MinFastAgreement > 0 && s.Samples >= 10 && s.Agreement < f.MinFastAgreement {
		return fmt.Sprintf("the fast variant agrees with the precise one %.0f%% of the time (min_fast_agreement %.0f%%)",
			100*s.Agreement, 100*f.MinFastAgreement)
	}
	if res != nil && f.EscalateBelow > 0 && len(res.Top) > 0 && float64(res.Top[0].Score) < f.EscalateBelow {
		return fmt.Sprintf("the fast answer's score %.2f is below escalate_below %.2f", res.Top[0].Score, f.EscalateBelow)
	}
	return ""
}

// escalate runs r on family f's precise variant, waiting up to
// escalate_wait for it to be warm. It reports whether the precise variant
// answered (false: the wait ran out) and whether it was warm.
func (a *Agent) escalate(ctx context.Context, f FamilyConfig, r infer.Request) (res infer.Result, answered, warm bool, err error) {
	precise := f.Variants[len(f.Variants)-1]
	a.planner.warmInBackground(precise)
	wctx, cancel := context.WithTimeout(ctx, f.escalateWait())
	defer cancel()
	// Not loading it here: a load cannot be stopped at the deadline. The
	// background warm-up loads it; this waits for that, or for a lease.
	l, err := a.pool.AcquireWarm(wctx, precise)
	a.tiers.mu.Lock()
	s := a.tiers.statsOf(f.ID)
	s.Escalated++
	if err != nil && ctx.Err() == nil {
		s.TimedOut++
	}
	a.tiers.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return infer.Result{}, false, false, ctx.Err()
		}
		return infer.Result{}, false, false, nil
	}
	defer l.Release()
	if !r.Raw {
		r.Labels = a.ready.labelsFor(precise)
	}
	res, err = infer.Run(l, r)
	return res, err == nil, l.Warm, err
}

// sampleFast keeps a fast answer of family f for checking, with the
// family's sample_fraction.
func (a *Agent) sampleFast(f FamilyConfig, image, tensor []byte, res infer.Result) {
	if len(res.Top) == 0 || a.opts.Rand() >= f.sampleFraction() {
		return
	}
	s := tierSample{image: append([]byte(nil), image...), tensor: append([]byte(nil), tensor...),
		top: res.Top[0].Index, score: float64(res.Top[0].Score)}
	a.tiers.mu.Lock()
	if p := a.tiers.pending[f.ID]; len(p) < maxTierPending {
		a.tiers.pending[f.ID] = append(p, s)
	}
	a.tiers.mu.Unlock()
	a.checkSamples(f)
}

// checkSamples runs family f's kept samples through its precise variant
// in the background, once it is warm (never loading it for this).
func (a *Agent) checkSamples(f FamilyConfig) {
	precise := f.Variants[len(f.Variants)-1]
	if a.run.ctx == nil || !a.pool.IsWarm(precise) {
		return
	}
	a.tiers.mu.Lock()
	if a.tiers.running[f.ID] || len(a.tiers.pending[f.ID]) == 0 {
		a.tiers.mu.Unlock()
		return
	}
	a.tiers.running[f.ID] = true
	a.tiers.mu.Unlock()
	a.run.spawn(a.run.ctx, func(ctx context.Context) {
		defer func() {
			a.tiers.mu.Lock()
			a.tiers.running[f.ID] = false
			a.tiers.mu.Unlock()
		}()
		for ctx.Err() == nil && a.pool.IsWarm(precise) {
			a.tiers.mu.Lock()
			p := a.tiers.pending[f.ID]
			if len(p) == 0 {
				a.tiers.mu.Unlock()
				return
			}
			s := p[0]
			a.tiers.pending[f.ID] = p[1:]
			a.tiers.mu.Unlock()
			req := infer.Request{Tensor: s.tensor, Top: 1}
			var d *infer.Decoded
			if s.image != nil {
				var err error
				if d, err = a.mem.decodes.Decode(ctx, s.image, a.config().Infer.MaxImagePixels); err != nil {
					continue
				}
				req = infer.Request{Image: d.Image, Top: 1}
			}
			res, err := update.RunOn(ctx, a.pool, precise, req)
			d.Release()
			if err != nil || len(res.Top) == 0 {
				continue
			}
			a.tiers.mu.Lock()
			st := a.tiers.statsOf(f.ID)
			st.Samples++
			if res.Top[0].Index == s.top {
				st.Agreed++
			} else {
				st.DisagreedScores[min(int(s.score*10), 9)]++
			}
			st.Agreement = float64(st.Agreed) / float64(st.Samples)
			a.tiers.mu.Unlock()
		}
	})
}

// checkSamplesFor starts checking the samples of the families whose
// precise variant is model (it just became warm).
func (a *Agent) checkSamplesFor(model string) {
	for _, f := range a.config().Families {
		if f.Variants[len(f.Variants)-1] == model {
			a.checkSamples(f)
		}
	}
}
