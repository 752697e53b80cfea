package bench

// Traces in the Azure Functions 2019 per-minute invocation format
// (AzureFunctionsDataset2019, invocations_per_function_md.anon.d*.csv):
// a header `HashOwner,HashApp,HashFunction,Trigger,1,2,…,1440`, then one
// row per function with its invocation count in each minute of a day.
// ReadAzure reads it, ImportAzure maps functions onto a zoo's models and
// spreads each minute's invocations within it, GenerateAzure writes such
// files with a seed (tests and CI download nothing).

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"slices"
	"strconv"
	"time"
)

// azureKeys are the columns before the per-minute counts.
var azureKeys = []string{"HashOwner", "HashApp", "HashFunction", "Trigger"}

// AzureFunction is one row: a function and its invocations per minute.
type AzureFunction struct {
	Owner, App, Function, Trigger string
	PerMinute                     []int
}

// Total is the function's invocations over the trace.
func (f AzureFunction) Total() int {
	n := 0
	for _, c := range f.PerMinute {
		n += c
	}
	return n
}

// ErrAzureFormat is a file not in the per-minute format.
var ErrAzureFormat = errors.New("not an Azure Functions per-minute invocation trace")

// ReadAzure parses a per-minute invocation file. The header must name the
// four key columns and then minutes 1, 2, … in order (a day has 1440);
// every row needs a count, a non-negative integer, for each minute.
func ReadAzure(r io.Reader) ([]AzureFunction, error) {
	cr := csv.NewReader(bufio.NewReader(r))
	cr.ReuseRecord = true
	head, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: empty file", ErrAzureFormat)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrAzureFormat, err)
	}
	if len(head) < len(azureKeys)+1 {
		return nil, fmt.Errorf("%w: header has %d columns, want %v then minutes 1…1440", ErrAzureFormat, len(head), azureKeys)
	}
	for i, k := range azureKeys {
		if head[i] != k {
			return nil, fmt.Errorf("%w: header column %d is %q, want %q", ErrAzureFormat, i+1, head[i], k)
		}
	}
	minutes := len(head) - len(azureKeys)
	for m := range minutes {
		if head[len(azureKeys)+m] != strconv.Itoa(m+1) {
			return nil, fmt.Errorf("%w: header column %d is %q, want minute %d", ErrAzureFormat, len(azureKeys)+m+1, head[len(azureKeys)+m], m+1)
		}
	}
	var out []AzureFunction
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrAzureFormat, err) // csv's error names the line
		}
		f := AzureFunction{Owner: rec[0], App: rec[1], Function: rec[2], Trigger: rec[3], PerMinute: make([]int, minutes)}
		if f.Function == "" {
			return nil, fmt.Errorf("%w: line %d: no HashFunction", ErrAzureFormat, line)
		}
		for m := range minutes {
			v, err := strconv.Atoi(rec[len(azureKeys)+m])
			if err != nil || v < 0 {
				return nil, fmt.Errorf("%w: line %d, minute %d: count %q, want an integer ≥ 0", ErrAzureFormat, line, m+1, rec[len(azureKeys)+m])
			}
			f.PerMinute[m] = v
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no functions", ErrAzureFormat)
	}
	return out, nil
}

// ImportOptions map an Azure trace onto a zoo.
type ImportOptions struct {
	Models []string // the zoo's ids
	// Functions is how many functions to take, the most invoked first;
	// 0 means as many as there are models.
	Functions int
	// Seed picks which model each function becomes and where in its
	// minute each invocation falls.
	Seed int64
}

// ImportAzure turns functions into a request trace: the Functions most
// invoked, each mapped onto a model (a seeded shuffle; more functions than
// models share them in turn), each minute's invocations at uniformly
// random times within that minute.
func ImportAzure(fns []AzureFunction, o ImportOptions) ([]TraceRequest, error) {
	if len(o.Models) == 0 {
		return nil, errors.New("import: no models")
	}
	n := o.Functions
	if n <= 0 {
		n = len(o.Models)
	}
	byUse := slices.Clone(fns)
	slices.SortStableFunc(byUse, func(a, b AzureFunction) int {
		return cmp.Or(cmp.Compare(b.Total(), a.Total()), cmp.Compare(a.Function, b.Function), cmp.Compare(a.App, b.App))
	})
	byUse = byUse[:min(n, len(byUse))]
	rng := rand.New(rand.NewSource(o.Seed))
	models := slices.Clone(o.Models)
	slices.Sort(models)
	rng.Shuffle(len(models), func(i, j int) { models[i], models[j] = models[j], models[i] })
	var out []TraceRequest
	for i, f := range byUse {
		m := models[i%len(models)]
		for minute, c := range f.PerMinute {
			for range c {
				at := time.Duration(minute)*time.Minute + time.Duration(rng.Int63n(int64(time.Minute)))
				out = append(out, TraceRequest{At: at, Model: m})
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("import: the functions taken were never invoked")
	}
	slices.SortStableFunc(out, func(a, b TraceRequest) int { return cmp.Compare(a.At, b.At) })
	return out, nil
}

// AzureOptions shape a generated per-minute trace.
type AzureOptions struct {
	Functions int     // rows; 0 means 40
	Minutes   int     // columns; 0 means 1440 (a day)
	Seed      int64   // the same seed gives the same file
	Zipf      float64 // popularity exponent over the functions; 0 means 1.1
	// PerMinute is the mean invocations per minute of all functions
	// together; 0 means 30 (a request every 2 s).
	PerMinute float64
}

// GenerateAzure makes functions with the traits the 2019 trace study
// reports ("Serverless in the Wild", ATC'20): Zipf popularity, a quarter
// of the functions timers (every 1–60 minutes), the rest HTTP, queue or
// event triggered with Poisson counts that follow a day cycle (half
// peaking by day, half by night), queue ones in bursts.
func GenerateAzure(o AzureOptions) []AzureFunction {
	if o.Functions <= 0 {
		o.Functions = 40
	}
	if o.Minutes <= 0 {
		o.Minutes = 1440
	}
	if o.Zipf <= 0 {
		o.Zipf = 1.1
	}
	if o.PerMinute <= 0 {
		o.PerMinute = 30
	}
	rng := rand.New(rand.NewSource(o.Seed))
	hash := func() string {
		const hex = "0123456789abcdef"
		b := make([]byte, 64)
		for i := range b {
			b[i] = hex[rng.Intn(16)]
		}
		return string(b)
	}
	var weights []float64
	sum := 0.0
	for k := range o.Functions {
		w := 1 / math.Pow(float64(k+1), o.Zipf)
		weights = append(weights, w)
		sum += w
	}
	rng.Shuffle(len(weights), func(i, j int) { weights[i], weights[j] = weights[j], weights[i] })
	periods := []int{1, 5, 10, 15, 30, 60}
	out := make([]AzureFunction, o.Functions)
	owner, app := hash(), hash()
	for i := range out {
		if rng.Intn(3) == 0 {
			owner = hash()
		}
		if rng.Intn(2) == 0 {
			app = hash()
		}
		f := AzureFunction{Owner: owner, App: app, Function: hash(), PerMinute: make([]int, o.Minutes)}
		rate := o.PerMinute * weights[i] / sum
		phase := 0.0
		if rng.Intn(2) == 1 {
			phase = math.Pi
		}
		switch k := rng.Intn(4); {
		case k == 0:
			f.Trigger = "timer"
			p := periods[rng.Intn(len(periods))]
			for m := rng.Intn(p); m < o.Minutes; m += p {
				f.PerMinute[m] = 1
			}
		case k == 1:
			f.Trigger = "queue"
			// Bursts: a burst minute holds 20× the mean of 20 minutes.
			for m := range o.Minutes {
				if rng.Float64() < 0.05 {
					f.PerMinute[m] = poisson(rng, 20*rate)
				}
			}
		default:
			f.Trigger = []string{"http", "event"}[k-2]
			for m := range o.Minutes {
				day := 1 + 0.9*math.Cos(2*math.Pi*float64(m)/1440+phase)
				f.PerMinute[m] = poisson(rng, rate*day)
			}
		}
		out[i] = f
	}
	return out
}

// WriteAzure writes functions in the per-minute format.
func WriteAzure(w io.Writer, fns []AzureFunction) error {
	minutes := 0
	for _, f := range fns {
		minutes = max(minutes, len(f.PerMinute))
	}
	cw := csv.NewWriter(w)
	head := slices.Clone(azureKeys)
	for m := range minutes {
		head = append(head, strconv.Itoa(m+1))
	}
	if err := cw.Write(head); err != nil {
		return err
	}
	rec := make([]string, len(head))
	for _, f := range fns {
		copy(rec, []string{f.Owner, f.App, f.Function, f.Trigger})
		for m := range minutes {
			c := 0
			if m < len(f.PerMinute) {
				c = f.PerMinute[m]
			}
			rec[len(azureKeys)+m] = strconv.Itoa(c)
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// poisson draws a Poisson count of mean l (Knuth's method in chunks, so a
// large mean does not underflow).
func poisson(rng *rand.Rand, l float64) int {
	n := 0
	for l > 0 {
		step := min(l, 30)
		l -= step
		limit, p := math.Exp(-step), rng.Float64()
		for p > limit {
			n++
			p *= rng.Float64()
		}
	}
	return n
}
