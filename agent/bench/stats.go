package bench

import (
	"math"
	"slices"
	"time"
)

// Dist summarises repeated measurements: median and spread.
type Dist struct {
	N               int
	Median, P5, P95 float64 // in the unit of the samples
	Min, Max        float64
}

func dist(samples []float64) Dist {
	if len(samples) == 0 {
		return Dist{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	q := func(p float64) float64 { return s[int(math.Round(p*float64(len(s)-1)))] }
	return Dist{N: len(s), Median: q(0.5), P5: q(0.05), P95: q(0.95), Min: s[0], Max: s[len(s)-1]}
}

func quantile(samples []float64, p float64) float64 {
	s := slices.Clone(samples)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[int(math.Round(p*float64(len(s)-1)))]
}

func msOf(d time.Duration) float64 { return float64(d) / 1e6 }
