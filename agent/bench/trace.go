package bench

// Request traces: the CSV format `t_ms,model_id` (one request per line,
// times from the start, ascending) and a generator of the shapes the
// Azure Functions trace study reports ("Serverless in the Wild", ATC'20):
// heavy-tailed popularity, bursts, diurnal cycles and timers.

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TraceRequest is one request of a trace.
type TraceRequest struct {
	At    time.Duration // since the trace's start
	Model string
}

// ReadTrace parses a CSV trace. A first line that is not a request (a
// header) is skipped; blank lines and lines starting with # too.
func ReadTrace(r io.Reader) ([]TraceRequest, error) {
	var out []TraceRequest
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ts, id, ok := strings.Cut(line, ",")
		ms, err := strconv.ParseFloat(strings.TrimSpace(ts), 64)
		if n == 1 && err != nil {
			continue // header
		}
		id = strings.TrimSuffix(strings.TrimSpace(id), ".tflite")
		switch {
		case !ok || id == "":
			return nil, fmt.Errorf("trace line %d: want t_ms,model_id", n)
		case err != nil || ms < 0 || math.IsNaN(ms) || math.IsInf(ms, 0):
			return nil, fmt.Errorf("trace line %d: bad time %q", n, ts)
		}
		at := time.Duration(ms * float64(time.Millisecond))
		if len(out) > 0 && at < out[len(out)-1].At {
			return nil, fmt.Errorf("trace line %d: time %s goes backwards", n, ts)
		}
		out = append(out, TraceRequest{At: at, Model: id})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("trace: no requests")
	}
	return out, nil
}

// WriteTrace writes a trace as CSV with a header.
func WriteTrace(w io.Writer, t []TraceRequest) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "t_ms,model_id")
	for _, r := range t {
		fmt.Fprintf(bw, "%.3f,%s\n", float64(r.At)/float64(time.Millisecond), r.Model)
	}
	return bw.Flush()
}

// TraceShapes are the shapes GenerateTrace makes.
var TraceShapes = []string{"heavy", "bursty", "diurnal", "periodic"}

// TraceOptions shape a generated trace.
type TraceOptions struct {
	Shape    string
	Models   []string // ids; popularity ranks are a seeded shuffle of them
	Seed     int64
	Duration time.Duration // 0: the shape's default (2 h; diurnal 24 h)
	Mean     time.Duration // mean time between requests; 0: 2 s (diurnal 10 s)
	Zipf     float64       // popularity exponent; 0: 1.1
}

// GenerateTrace makes a synthetic trace; the same options give the same
// trace.
//   - heavy: Zipf (s = Zipf, 1.1 by default) popularity, Poisson arrivals;
//   - bursty: bursts of 5–40 requests 50–250 ms apart to one model (Zipf),
//     starting at Poisson times, over a thin heavy-tailed background;
//   - diurnal: 24 h; each model's rate follows a day cycle (×0.1 to ×1.9),
//     half the models peaking by day, half by night;
//   - periodic: most models are timers (every 10 s to 15 min, ±2 %
//     jitter) over a heavy-tailed background of a fifth of the requests.
func GenerateTrace(o TraceOptions) ([]TraceRequest, error) {
	if len(o.Models) == 0 {
		return nil, fmt.Errorf("trace: no models")
	}
	rng := rand.New(rand.NewSource(o.Seed))
	ranked := slices.Clone(o.Models)
	slices.Sort(ranked)
	rng.Shuffle(len(ranked), func(i, j int) { ranked[i], ranked[j] = ranked[j], ranked[i] })
	dur, mean := o.Duration, o.Mean
	if dur <= 0 {
		dur = 2 * time.Hour
		if o.Shape == "diurnal" {
			dur = 24 * time.Hour
		}
	}
	if mean <= 0 {
		mean = 2 * time.Second
		if o.Shape == "diurnal" {
			mean = 10 * time.Second
		}
	}
	s := o.Zipf
	if s <= 0 {
		s = 1.1
	}
	zipf := newZipf(rng, len(ranked), s)
	pick := func() string { return ranked[zipf()] }
	exp := func(m time.Duration) time.Duration { return time.Duration(rng.ExpFloat64() * float64(m)) }
	var out []TraceRequest
	switch o.Shape {
	case "heavy":
		for t := exp(mean); t < dur; t += exp(mean) {
			out = append(out, TraceRequest{t, pick()})
		}
	case "bursty":
		for t := exp(5 * mean); t < dur; t += exp(5 * mean) {
			out = append(out, TraceRequest{t, pick()})
		}
		for t := exp(40 * mean); t < dur; t += exp(40 * mean) {
			m, at := pick(), t
			for range 5 + rng.Intn(36) {
				at += time.Duration(50+rng.Intn(200)) * time.Millisecond
				if at < dur {
					out = append(out, TraceRequest{at, m})
				}
			}
		}
	case "diurnal":
		// Thinning: candidates at twice the mean rate, each kept with its
		// model's day-cycle factor ÷ 2.
		for t := exp(mean / 2); t < dur; t += exp(mean / 2) {
			i := zipf()
			phase := 0.0
			if i%2 == 1 {
				phase = math.Pi
			}
			f := 1 + 0.9*math.Cos(2*math.Pi*float64(t)/float64(24*time.Hour)+phase)
			if rng.Float64() < f/2 {
				out = append(out, TraceRequest{t, ranked[i]})
			}
		}
	case "periodic":
		periods := []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute}
		for i, m := range ranked {
			if i%4 == 3 {
				continue // a quarter are no timers
			}
			p := periods[rng.Intn(len(periods))]
			for t := time.Duration(rng.Int63n(int64(p))); t < dur; t += p + time.Duration((rng.Float64()-0.5)*0.04*float64(p)) {
				out = append(out, TraceRequest{t, m})
			}
		}
		for t := exp(5 * mean); t < dur; t += exp(5 * mean) {
			out = append(out, TraceRequest{t, pick()})
		}
	default:
		return nil, fmt.Errorf("trace shape %q: want one of %v", o.Shape, TraceShapes)
	}
	slices.SortStableFunc(out, func(a, b TraceRequest) int { return int(a.At - b.At) })
	return out, nil
}

// newZipf draws ranks 0..n-1 with P(k) ∝ 1/(k+1)^s.
func newZipf(rng *rand.Rand, n int, s float64) func() int {
	cdf := make([]float64, n)
	sum := 0.0
	for k := range n {
		sum += 1 / math.Pow(float64(k+1), s)
		cdf[k] = sum
	}
	return func() int {
		u := rng.Float64() * sum
		k, _ := slices.BinarySearch(cdf, u)
		return min(k, n-1)
	}
}
