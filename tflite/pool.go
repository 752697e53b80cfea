package tflite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-agent/edge-agent/internal/slot"
	"github.com/edge-agent/edge-agent/internal/smallfirst"
)

// PoolOptions configure a Pool. The zero value is an unbounded pool with one
// CPU interpreter per model and cost-aware eviction.
type PoolOptions struct {
	// Budget caps the bytes warm models hold (sum of Footprint.Total over
	// interpreters, the mapping counted once per model); 0 means no cap.
	Budget int64
	// PerModel is the default number of interpreters per model; 0 means 1.
	PerModel int
	// Interpreter holds the default interpreter options.
	Interpreter Options
	// PageIn reads a model's file when it is mapped, so the warm-up invoke
	// does not fault it in page by page.
	PageIn bool
	// ReadRate is the storage's cold read rate in bytes/s (MeasureReadRate):
	// with it a model's cold cost counts reading the part of its file that
	// was not in the page cache at its load, at this rate; 0 counts the
	// page-in as measured.
	ReadRate float64
	// Policy for eviction and keep-alive; nil means NewPolicy(DefaultPolicy).
	// It must not be shared with another pool.
	Policy Policy
	// HalfLife of the demand estimate; 0 means 10 minutes.
	HalfLife time.Duration
	// RewarmsPerHour bounds the background loads PrewarmDue makes (the
	// energy policy's allowance; SetRewarmsPerHour changes it): at most a
	// tenth of an hour's worth at once. 0 means no bound; < 0 none at all.
	RewarmsPerHour float64
	// InvokeCores is how many interpreter threads invoke at once before
	// the next invoke waits its turn (invokeGate); 0 means one per CPU,
	// < 0 lets every invoke run at once.
	InvokeCores int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
	// OnLoad and OnEvict are called after an interpreter was warmed or a
	// model evicted, outside the pool's lock, on the caller's goroutine.
	OnLoad  func(LoadEvent)
	OnEvict func(EvictEvent)
	// Resolve, when set, is asked (without the pool's lock) for a model
	// id that is not registered: it may register it now (a start still
	// registering models takes a request's model first) and says whether
	// to look again.
	Resolve func(ctx context.Context, id string) bool
	// SmallFirst, when set, is marked by the loads of tiny files while
	// they run, and large loads wait at it (for at most its Max) before
	// they are admitted: a large load's reads and C calls otherwise share
	// the cores and the disk with a tiny model's millisecond load. The
	// agent shares it with its registrations.
	SmallFirst *smallfirst.Gate
}

// ModelSpec registers a model with the pool.
type ModelSpec struct {
	ID   string
	Path string
	// Pinned models are never evicted.
	Pinned bool
	// PerModel overrides the pool's interpreters per model when > 0.
	PerModel int
	// Interpreter overrides the pool's interpreter options when non-nil.
	Interpreter *Options
	// KnownHeap is a heap footprint per interpreter measured earlier on this
	// hardware (restored calibration); with it the pool makes room before
	// loading. 0 means unknown: the pool measures it on load.
	KnownHeap int64
	// WarmInput feeds the warm-up invoke; nil means zeros.
	WarmInput []byte
	// Stateful keeps variable tensors between requests (a streaming model
	// that wants its state); otherwise they are reset before every
	// request's invoke, so an answer never depends on what ran before.
	Stateful bool
	// Version labels the model's content (the agent's digest of the file);
	// the pool only carries it to the model's leases (Lease.Version), so a
	// caller can tell which version answered a request across a swap.
	Version string
	// StagingOf names the serving model this one is a new version of,
	// staged under its own id until Promote or Unregister (see staging.go).
	StagingOf string
	// KnownSteady and KnownSaved come from calibration: the steady invoke
	// time (a prewarm then skips its own measuring invoke) and the cold
	// time a warm interpreter saves (the eviction value when a load skipped
	// stages).
	KnownSteady, KnownSaved time.Duration
	// KnownMisses are what the model's latest misses cost over a warm
	// request, as LearnedCosts returned them before a restart: the pool
	// ranks by them at once instead of relearning them.
	KnownMisses []time.Duration
	// Facts, when set and still about the file at Path (same identity),
	// give its size and variables: registering does not read the file.
	Facts *FileFacts
}

// LoadEvent reports one interpreter warmed by the pool.
type LoadEvent struct {
	ModelID  string
	Report   LoadReport
	NewModel bool // the model was mapped for this load
}

// EvictEvent reports one model evicted.
type EvictEvent struct {
	ModelID string
	Bytes   int64
	Reason  string // "budget" or "requested"
}

// Stats are the pool's counters since it was created.
type Stats struct {
	Hits         uint64        `json:"hits"`          // served at once by a warm interpreter
	Waits        uint64        `json:"waits"`         // served by a warm interpreter after waiting for it
	Misses       uint64        `json:"misses"`        // had to warm an interpreter first
	Loads        uint64        `json:"loads"`         // interpreters warmed (misses and prewarms)
	LoadFailures uint64        `json:"load_failures"` // warm-ups that failed
	Rejected     uint64        `json:"rejected"`      // refused for the budget
	Evictions    uint64        `json:"evictions"`
	ColdSaved    time.Duration `json:"cold_saved_ns"` // cold-start time that hits and waits did not pay
	BytesInUse   int64         `json:"bytes_in_use"`
	PeakBytes    int64         `json:"peak_bytes"`     // the most ever accounted at once
	Reserved     int64         `json:"reserved_bytes"` // held by reservations (calibration), part of BytesInUse
	Budget       int64         `json:"budget"`
	ReadRate     float64       `json:"read_rate_bytes_per_sec,omitempty"` // the storage's, see PoolOptions
	WarmModels   int           `json:"warm_models"`                       // with an interpreter ready or in use
	Interpreters int           `json:"interpreters"`
	Leased       int           `json:"leased"`
}

// ModelStatus describes one registered model.
type ModelStatus struct {
	ID           string     `json:"id"`
	Path         string     `json:"path"`
	Pinned       bool       `json:"pinned"`
	Warm         bool       `json:"warm"`   // an interpreter is ready (or in use)
	Mapped       bool       `json:"mapped"` // the model file is mapped
	Interpreters int        `json:"interpreters"`
	Leased       int        `json:"leased"`
	Loading      bool       `json:"loading"` // an interpreter is being warmed
	Bytes        int64      `json:"bytes"`
	Loads        uint64     `json:"loads"` // interpreters warmed for this model, ever
	LastLoad     LoadReport `json:"last_load"`
	// ColdMs is what its next cold start is expected to cost over a warm
	// request, as the eviction policy ranks it: learned from its misses.
	ColdMs float64 `json:"cold_cost_ms"`
}

// Pool keeps warm interpreters within a byte budget. Acquire leases one;
// Release returns it. All methods are safe for concurrent use.
type Pool struct {
	opts   PoolOptions
	log    *slog.Logger
	loader loader

	// load is the one load slot (cheapest waiting load first): heap
	// measurements must not mix, and two cold loads on a small board only
	// slow each other.
	load slot.Slot
	// beside counts the loads of tiny files (tinyFile), which run beside
	// the load slot's holder rather than wait for it: with the slot's own
	// reading they say whether any load ran during a heap measurement.
	beside besideLoads

	// mu guards entries, bytes, stats, closed and every entry's fields.
	mu          sync.Mutex
	entries     map[string]*entry
	bytes       int64
	peak        int64     // the most bytes ever accounted at once
	reserved    int64     // bytes held by reservations (part of bytes)
	lastDemand  time.Time // the latest request (Acquire)
	misses      float64   // requests that loaded, decayed with HalfLife, at missesAt
	missesAt    time.Time
	rewarms     allowance // PrewarmDue's loads against RewarmsPerHour
	stats       Stats
	closed      bool
	events      []func() // callbacks to run once mu is released
	frees       []func() // C frees and munmaps for the reaper, once mu is released
	freedC      bool     // frees free C memory: give the heap back after
	reaper      *reaper
	readings    heapReadings  // invokes reading the C heap now
	gate        *invokeGate   // orders contending invokes; nil lets all run
	resolving   int           // acquires waiting for Resolve
	workRate    workRate      // invoke time per unit of graph work, learned
	freed       chan struct{} // closed and replaced whenever bytes or leases are given back
	roomWaiters int           // goroutines waiting on freed
}

type entry struct {
	spec     ModelSpec
	perModel int
	opts     Options
	fileSize int64 // at registration, for admission before mapping
	// work is an invoke's multiply-accumulates, estimated from the graph
	// at registration (0: not known); invokeCost orders by it until
	// invokes are timed.
	work int64
	// vars: the model has variable tensors (read from the file once, at
	// registration). Unless it is Stateful, Lease.Invoke resets them.
	// Immutable: read without mu.
	vars, resetVars bool

	model mapping    // nil while cold
	idle  []instance // warm and free
	heaps map[instance]int64
	// gen counts Updates that changed how interpreters are made; an
	// interpreter of an older generation is freed when released.
	gen  int
	gens map[instance]int
	// unmeasured interpreters skipped the warm-up invoke: their first
	// invoke (Lease.Invoke) measures the rest. Those of a model never
	// measured are accounted at an estimate until then.
	unmeasured map[instance]unmeasured
	leased     int
	growing    int  // warm-ups requested, waiting or in flight (at most one)
	loading    bool // the warm-up holds the load slot and uses model
	waiters    int
	removed    bool
	held       bool // drained for an update: requests wait (see Drain)
	bytes      int64

	knownHeap int64
	lowHeap   int64         // a full warm-up's heap below knownHeap, not confirmed yet
	last      LoadReport    // latest warm-up
	cold      time.Duration // cold start saved by staying warm: costs.estimate
	costs     coldCost
	// fresh interpreters were loaded with their model for a request that
	// makes their first invoke: Lease.Invoke times it and notes the miss
	// (the value is the load's stages).
	fresh map[instance]Stages

	demand   float64   // decayed request count at demandAt
	demandAt time.Time // the latest request
	use      Use       // the policy's view (and its state), see useLocked
	// prewarmedAt is the latest PrewarmDue. guessing: the load in flight
	// (growing) is a due prewarm's, whose room only models worth less give
	// up (makeRoomForGuessLocked); a request's load never is, even one
	// that a due prewarm of the same model waits behind.
	prewarmedAt time.Time
	guessing    bool
	lastUsed    time.Time
	loads       uint64

	changed chan struct{} // closed and replaced on every change waiters care about
}

// unmeasured is an interpreter whose first invoke is still to be measured:
// the heap measured before it, and whether it is accounted at an estimate
// (the model was never measured) rather than at its known heap.
type unmeasured struct {
	pre      int64
	estimate bool
}

// estimateCold sets e.cold from the misses learned so far, the calibrated
// figure counting as one; fallback (a load's own stages) stands in before
// either exists.
func (e *entry) estimateCold(fallback time.Duration) {
	e.cold = e.costs.estimate(e.spec.KnownSaved, fallback)
}

// Lease is exclusive use of one warm interpreter until Release.
type Lease struct {
	// Warm is true when the interpreter was already warm (no cold start paid).
	Warm bool

	p    *Pool
	e    *entry
	it   instance
	done atomic.Bool
	// notice announced this lease's first invoke to the gate while its
	// model loaded; Invoke (or Release) takes it back.
	notice *gateNotice
}

// NewPool returns an empty pool.
func NewPool(o PoolOptions) *Pool { return newPool(o, runtimeLoader{}) }

// newPool is NewPool with another loader (the unit tests' fake).
func newPool(o PoolOptions, l loader) *Pool {
	if o.PerModel <= 0 {
		o.PerModel = 1
	}
	if o.HalfLife <= 0 {
		o.HalfLife = 10 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Policy == nil {
		o.Policy, _ = NewPolicy(DefaultPolicy, PolicyOptions{})
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p := &Pool{opts: o, log: log, loader: l, entries: make(map[string]*entry), freed: make(chan struct{}), reaper: newReaper(l.releaseHeap)}
	switch {
	case o.InvokeCores == 0:
		p.gate = newInvokeGate(runtime.NumCPU(), gateMaxWait)
	case o.InvokeCores > 0:
		p.gate = newInvokeGate(o.InvokeCores, gateMaxWait)
	}
	return p
}

// gateMaxWait bounds an invoke's wait at the gate: past it the invoke runs
// beside whatever holds the cores (a hung invoke must not stop the rest).
const gateMaxWait = 2 * time.Second

// Register adds a model; it stays cold until acquired or prewarmed.
func (p *Pool) Register(s ModelSpec) error {
	e, err := p.newEntry(s)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return &Error{Op: "register model " + s.ID, Kind: ErrPoolClosed}
	}
	if _, ok := p.entries[s.ID]; ok {
		return fmt.Errorf("register model %q: already registered", s.ID)
	}
	p.entries[s.ID] = e
	return nil
}

// newEntry prepares an entry for s (reading the file's size and whether
// it has variable tensors).
func (p *Pool) newEntry(s ModelSpec) (*entry, error) {
	if s.ID == "" {
		return nil, fmt.Errorf("register model: empty id")
	}
	info, ok := factsFor(s)
	if !ok {
		var err error
		if info, err = p.loader.inspect(s.Path); err != nil {
			return nil, fmt.Errorf("register model %q: %w", s.ID, err)
		}
	}
	e := &entry{spec: s, perModel: p.opts.PerModel, opts: p.opts.Interpreter, fileSize: info.size, work: info.work, vars: info.vars, resetVars: info.vars && !s.Stateful,
		knownHeap: s.KnownHeap, heaps: map[instance]int64{}, gens: map[instance]int{}, unmeasured: map[instance]unmeasured{}, fresh: map[instance]Stages{}, changed: make(chan struct{})}
	if s.PerModel > 0 {
		e.perModel = s.PerModel
	}
	if s.Stateful {
		e.perModel = 1 // one stream of state: one interpreter
	}
	if s.Interpreter != nil {
		e.opts = *s.Interpreter
	}
	if len(s.KnownMisses) > 0 {
		for _, d := range s.KnownMisses {
			e.costs.saved.add(d)
		}
		e.estimateCold(s.KnownSaved)
	}
	return e, nil
}

// LearnedCosts are what each model's latest misses cost over a warm
// request (oldest first; models with none are left out): persist them
// with the calibration and pass them back as ModelSpec.KnownMisses.
func (p *Pool) LearnedCosts() map[string][]time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]time.Duration{}
	for id, e := range p.entries {
		if v := e.costs.saved.samples(); len(v) > 0 {
			out[id] = v
		}
	}
	return out
}

// Replace registers s in place of the model with the same id at once: new
// requests (and those waiting) go to s, leases on the old version finish on
// it, and its interpreters and mapping are freed once released. A request
// never finds the id missing in between.
func (p *Pool) Replace(s ModelSpec) error {
	e, err := p.newEntry(s)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return &Error{Op: "replace model " + s.ID, Kind: ErrPoolClosed}
	}
	old, ok := p.entries[s.ID]
	p.entries[s.ID] = e
	if ok {
		old.removed = true
		p.freeIdleLocked(old)
		p.broadcastLocked(old)
	}
	p.unlockAndNotify()
	return nil
}

// Promote makes the model registered as staged serve as id, in one step:
// a new version was registered under a staging id, warmed and checked
// there while the old one served. New requests (and those waiting) go to
// it; leases on the old version finish on it, which is freed once they are
// released. The staged model keeps its warm interpreters and takes over
// the old one's pinning and demand. Nothing may be leased or loading on
// the staged id (ErrBusy). It returns when the swap happened (taken under
// the pool's lock: requests before it were served by the old version,
// requests after by the new).
func (p *Pool) Promote(staged, id string) (time.Time, error) {
	p.mu.Lock()
	e, ok := p.entries[staged]
	switch {
	case p.closed:
		p.mu.Unlock()
		return time.Time{}, &Error{Op: "promote " + staged, Kind: ErrPoolClosed}
	case !ok:
		p.mu.Unlock()
		return time.Time{}, &Error{Op: "promote " + staged, Kind: ErrUnknownModel}
	case e.leased > 0 || e.growing > 0 || e.waiters > 0:
		p.mu.Unlock()
		return time.Time{}, &Error{Op: "promote " + staged, Kind: ErrBusy}
	case len(e.idle) == 0:
		// Evicted since it was warmed and checked: never swapped in blind.
		p.mu.Unlock()
		return time.Time{}, &Error{Op: "promote " + staged, Kind: ErrCold}
	}
	delete(p.entries, staged)
	e.spec.ID, e.spec.StagingOf = id, ""
	if old, ok := p.entries[id]; ok {
		e.spec.Pinned = old.spec.Pinned
		e.demand, e.demandAt, e.use = old.demand, old.demandAt, old.use
		old.removed = true
		p.freeIdleLocked(old)
		p.broadcastLocked(old)
	}
	p.entries[id] = e
	at := p.opts.Now()
	p.unlockAndNotify()
	return at, nil
}

// Unregister removes a model, freeing it now if idle or when its last lease
// is released.
func (p *Pool) Unregister(id string) error {
	p.mu.Lock()
	e, ok := p.entries[id]
	if !ok {
		p.mu.Unlock()
		return &Error{Op: "unregister " + id, Kind: ErrUnknownModel}
	}
	delete(p.entries, id)
	e.removed = true
	p.freeIdleLocked(e)
	p.broadcastLocked(e)
	p.unlockAndNotify()
	return nil
}

// Acquire leases a warm interpreter for model id, warming one if none is
// free and the model has room for another; otherwise it waits for a
// release until ctx is done.
func (p *Pool) Acquire(ctx context.Context, id string) (*Lease, error) {
	return p.acquire(ctx, id, true, true, false)
}

// AcquireWarm is Acquire without loading: it waits, until ctx is done, for
// an interpreter someone else warms (a prewarm) or releases. A caller with
// a deadline uses it when a load, which cannot be interrupted, could run
// past that deadline.
func (p *Pool) AcquireWarm(ctx context.Context, id string) (*Lease, error) {
	return p.acquire(ctx, id, true, false, false)
}

// acquire leases an interpreter of id; demand counts it as a request,
// mayLoad lets it warm one, and guess makes room for that load as a due
// prewarm does.
func (p *Pool) acquire(ctx context.Context, id string, demand, mayLoad, guess bool) (*Lease, error) {
	p.mu.Lock()
	e, ok := p.entries[id]
	if !ok && p.opts.Resolve != nil {
		p.resolving++
		p.mu.Unlock()
		resolved := p.opts.Resolve(ctx, id)
		p.mu.Lock()
		p.resolving--
		if resolved {
			e, ok = p.entries[id]
		}
	}
	if !ok {
		p.mu.Unlock()
		return nil, &Error{Op: "acquire " + id, Kind: ErrUnknownModel}
	}
	if demand {
		p.noteDemandLocked(e)
	}
	waited := false
	for {
		switch {
		case p.closed:
			p.mu.Unlock()
			return nil, &Error{Op: "acquire " + id, Kind: ErrPoolClosed}
		case e.removed:
			if ne, ok := p.entries[id]; ok && ne != e {
				e = ne // replaced while we waited: the new version serves
				continue
			}
			p.mu.Unlock()
			return nil, &Error{Op: "acquire " + id, Kind: ErrUnknownModel, Detail: "unregistered"}
		}
		if n := len(e.idle); n > 0 && !e.held {
			it := e.idle[n-1]
			e.idle = e.idle[:n-1]
			e.leased++
			if waited {
				p.stats.Waits++
			} else {
				p.stats.Hits++
			}
			p.stats.ColdSaved += e.cold
			e.lastUsed = p.opts.Now()
			p.mu.Unlock()
			return &Lease{Warm: true, p: p, e: e, it: it}, nil
		}
		if mayLoad && !e.held && e.growing == 0 && len(e.idle)+e.leased < e.perModel {
			e.growing++
			e.guessing = guess
			var notice *gateNotice
			if demand {
				notice = p.gate.expect(p.invokeCostLocked(e)) // the request's invoke follows the load
			}
			p.mu.Unlock()
			it, err := p.grow(ctx, e, demand)
			if errors.Is(err, errServeIdle) {
				p.gate.forget(notice)
				p.mu.Lock()
				continue
			}
			if err != nil {
				p.gate.forget(notice)
				return nil, err
			}
			return &Lease{p: p, e: e, it: it, notice: notice}, nil
		}
		ch := e.changed
		e.waiters++
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			p.mu.Lock()
			e.waiters--
			p.mu.Unlock()
			return nil, fmt.Errorf("acquire %q: %w", id, ctx.Err())
		}
		p.mu.Lock()
		e.waiters--
		waited = true
	}
}

// grow warms one more interpreter for e (mapping the model if cold) and
// returns it leased. The caller has counted e.growing. For a request
// (demand) whose footprint is already known it stops after allocation: the
// request's own invoke is the first, so the request does not pay for a
// warm-up and a measuring invoke too.
func (p *Pool) grow(ctx context.Context, e *entry, demand bool) (instance, error) {
	fail := func(err error, rejected bool) (instance, error) {
		p.mu.Lock()
		if errors.Is(err, errServeIdle) {
			p.abandonGrowLocked(e)
		} else {
			p.failGrowLocked(e, rejected)
		}
		p.unlockAndNotify()
		return nil, err
	}
	// Admission: free what the known part of the footprint needs before
	// touching the file, so a small board never holds both at once.
	p.mu.Lock()
	tiny := e.fileSize <= tinyFile
	p.mu.Unlock()
	var model mapping
	var err error
	if tiny {
		defer p.opts.SmallFirst.Small()()
		model, err = p.admitBeside(ctx, e)
	} else if err = p.opts.SmallFirst.Wait(ctx); err == nil {
		model, err = p.admit(ctx, e)
	}
	if err != nil {
		return fail(fmt.Errorf("acquire %q: %w", e.spec.ID, err), !isCtxErr(err))
	}
	var before besideReading
	if tiny {
		defer p.beside.end()
		before = p.besideReading()
	} else {
		defer p.load.Release()
	}

	var st Stages
	var nonResident int64
	newModel := model == nil
	if newModel {
		nonResident = p.loader.nonResident(e.spec.Path)
		m, mapTime, pageInTime, err := p.loader.mapModel(e.spec.Path, p.opts.PageIn)
		if err != nil {
			return fail(err, false)
		}
		st.Map, st.PageIn = mapTime, pageInTime
		model = m
	}
	// A request's own invoke is its first: it never pays for a warm-up
	// invoke too, as a naive loader would not. A prewarm runs the warm-up
	// invoke unless a request starts waiting for this interpreter by then.
	p.mu.Lock()
	opts, knownSteady, warmInput, gen, known := e.opts, e.spec.KnownSteady, e.spec.WarmInput, e.gen, e.knownHeap
	p.mu.Unlock()
	w := WarmOptions{Input: warmInput, SkipInvoke: demand, SkipSteady: demand || knownSteady > 0,
		SkipInvokeIf: func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return e.waiters > 0
		},
		Turn: func() func() {
			p.mu.Lock()
			cost := p.invokeCostLocked(e)
			p.mu.Unlock()
			turn := p.gate.enter(cost, opts.Threads, nil)
			return func() { p.gate.leave(turn) }
		}}
	// The heap is measured as the allocator's growth over the warm-up: the
	// frees of what admission evicted must not run inside it. A measurement
	// that becomes the model's heap waits for them first; a request's load
	// of a model whose heap is known does not (it only ever raises the
	// known heap) and checks instead whether one ran meanwhile.
	hold := !demand || known == 0
	if hold {
		p.reaper.hold()
	}
	quiet := p.reaper.activity()
	it, ws, heap, err := p.loader.warm(model, opts, w)
	clean := !quiet.busy && p.reaper.activity() == reaperActivity{epoch: quiet.epoch}
	// Beside another load the allocator's growth is partly the other's:
	// a tiny model is accounted at a guess instead.
	guessed := tiny && !before.alone(p.besideReading())
	if guessed {
		clean = false
	}
	if hold {
		p.reaper.unhold()
	}
	if err != nil {
		if newModel {
			_ = model.Close()
		}
		return fail(err, false)
	}
	ws.Map, ws.PageIn = st.Map, st.PageIn
	skipped := ws.FirstInvoke == 0
	if !skipped && e.vars {
		// The warm-up's zeros must not become a stateful model's state.
		if err := it.ResetVariables(); err != nil {
			it.Close()
			if newModel {
				_ = model.Close()
			}
			return fail(err, false)
		}
	}
	if w.SkipSteady || skipped {
		ws.Steady = knownSteady
	}
	preInvoke, measured := heap, heap
	p.mu.Lock()
	switch {
	case guessed && e.knownHeap > 0:
		heap = e.knownHeap // measured alone before: the better figure
	case guessed:
		// Never so much that the guess alone keeps out a model that fits.
		heap = max(tinyHeapGuess, 4*e.fileSize)
		if b := p.opts.Budget; b > 0 {
			heap = min(heap, b-e.fileSize)
		}
	case skipped && e.knownHeap > 0:
		// Measured before any invoke: never account less than a full
		// warm-up measured (calibration, or an earlier load).
		heap = max(heap, e.knownHeap)
	case !skipped && gen == e.gen && heap < e.knownHeap:
		// A full warm-up measured less than is known: one such measurement
		// is not believed (a free elsewhere in the process lowers it), two
		// in a row are, the larger of them.
		if e.lowHeap == 0 {
			e.lowHeap, heap = heap, e.knownHeap
		} else {
			e.lowHeap, heap = 0, max(heap, e.lowHeap)
		}
	case !skipped:
		e.lowHeap = 0
	case skipped:
		// Never measured: the first invoke adds about as much again as
		// allocation (XNNPACK packs the weights then); account an estimate
		// above that until Lease.Invoke measures it, but never so much
		// that the estimate alone keeps a model out that fits.
		heap = heap * unmeasuredFactor / 4
		if b := p.opts.Budget; b > 0 && newModel {
			heap = max(min(heap, b-model.mappedBytes()), preInvoke)
		} else if b > 0 {
			heap = max(min(heap, b-e.bytes), preInvoke)
		}
	}
	p.mu.Unlock()
	reported := heap // what the load holds as far as it knows
	if !skipped && !guessed {
		reported = measured // a full warm-up's own measurement: the fleet check compares it
	}
	rep := LoadReport{Stages: ws, Footprint: Footprint{Heap: reported}, Threads: opts.Threads, Delegates: append([]string{}, it.Delegates()...), FromStorage: nonResident}
	add := heap
	if newModel {
		add += model.mappedBytes()
		rep.Footprint.Mapped = model.mappedBytes()
	}
	discard := func() {
		it.Close()
		if newModel {
			_ = model.Close()
		}
	}

	p.mu.Lock()
	for {
		if p.closed || e.removed {
			p.failGrowLocked(e, false)
			p.frees = append(p.frees, discard) // before the model's own close
			p.closeModelIfUnusedLocked(e)
			p.unlockAndNotify()
			return nil, &Error{Op: "acquire " + e.spec.ID, Kind: ErrPoolClosed}
		}
		// The measurement may exceed what admission assumed.
		err := p.makeRoomLocked(add, e)
		if err == nil {
			break
		}
		if err == errServeIdle {
			// Built for nothing: the measurement left no room for a
			// second interpreter, and the first is free again.
			p.abandonGrowLocked(e)
			p.unlockAndNotify()
			discard()
			return nil, err
		}
		if err != errWaitForRelease {
			p.failGrowLocked(e, true)
			p.unlockAndNotify()
			discard()
			return nil, fmt.Errorf("acquire %q: %w", e.spec.ID, err)
		}
		if err := p.waitFreedLocked(ctx); err != nil {
			p.failGrowLocked(e, false)
			p.unlockAndNotify()
			discard()
			return nil, fmt.Errorf("acquire %q: %w", e.spec.ID, err)
		}
	}
	if newModel {
		e.model = model
		e.costs.extra = storageExtra(ws.PageIn, nonResident, p.opts.ReadRate)
		if skipped {
			e.fresh[it] = ws
		} else {
			e.costs.observe(ws, ws.FirstInvoke, e.spec.KnownSteady)
		}
		e.estimateCold(ws.Saved())
	}
	e.heaps[it] = heap
	e.gens[it] = gen // older than e.gen if an Update came meanwhile: freed on release
	switch {
	case !skipped && gen == e.gen && !guessed:
		e.knownHeap = heap
	case skipped && clean:
		// The request's invoke measures the rest (Lease.Invoke): an
		// estimate is replaced, a known heap (a twin's, or one measured
		// under other load) raised if this device needs more.
		e.unmeasured[it] = unmeasured{pre: preInvoke, estimate: e.knownHeap == 0}
	}
	p.peak = max(p.peak, p.bytes+add)
	e.bytes += add
	p.bytes += add
	e.last = rep
	e.growing--
	e.guessing = false
	e.loading = false
	e.leased++
	e.lastUsed = p.opts.Now()
	e.loads++
	p.stats.Misses++
	if demand {
		now := p.opts.Now()
		p.misses = p.misses*p.decay(now.Sub(p.missesAt)) + 1
		p.missesAt = now
	}
	p.stats.Loads++
	if cb := p.opts.OnLoad; cb != nil {
		ev := LoadEvent{ModelID: e.spec.ID, Report: rep, NewModel: newModel}
		p.events = append(p.events, func() { cb(ev) })
	}
	p.log.Debug("interpreter warmed", "model", e.spec.ID, "cold_ms", ms(ws.Cold()), "heap", heap, "bytes_in_use", p.bytes)
	p.unlockAndNotify()
	return it, nil
}

// admit takes the load load slot and makes room for what e is known to
// need, waiting (without the load slot) while busy models hold the room.
// It returns e's model (nil when cold) with the load slot held.
func (p *Pool) admit(ctx context.Context, e *entry) (mapping, error) {
	var model mapping
	p.mu.Lock()
	cost := e.fileSize + e.knownHeap // what the load reads and builds
	p.mu.Unlock()
	err := p.admitRoom(ctx, e, cost, func() int64 {
		need := e.knownHeap
		if e.model == nil {
			need += e.fileSize
		}
		return need
	}, func() {
		e.loading = true
		model = e.model
	})
	return model, err
}

// tinyFile is the largest model file that loads beside the load slot's
// holder instead of waiting for it: at a first start a 14 KB LSTM waited
// 15 ms, and a 0.5 MB mobilenet v1 (heap 0.7 MB) 40 ms, behind a larger
// model's load, for loads of a few milliseconds; a naive loop loads them
// all at once. Their heap is guessed when another load ran beside them
// (tinyHeapGuess).
const tinyFile = 1 << 20

// tinyHeapGuess is the least a tiny model is accounted at when another
// load ran beside its own (and at least four times its file): above the
// shared tiny models' measured heaps (xor ~50 KB, the LSTM ~150 KB,
// mobilenet v1 0.25 ~0.7 MB), so the budget errs on the safe side.
const tinyHeapGuess = 1 << 20

// admitBeside makes room for a tiny file's load without the load slot
// (tinyFile), as admit does otherwise.
func (p *Pool) admitBeside(ctx context.Context, e *entry) (mapping, error) {
	p.mu.Lock()
	for {
		need := e.knownHeap
		if e.model == nil {
			need += e.fileSize
		}
		err := p.makeRoomLocked(need, e)
		if err == nil {
			e.loading = true
			model := e.model
			p.unlockAndNotify()
			p.beside.begin()
			return model, nil
		}
		if err != errWaitForRelease {
			p.unlockAndNotify()
			return nil, err
		}
		if err := p.waitFreedLocked(ctx); err != nil {
			p.unlockAndNotify()
			return nil, err
		}
	}
}

// loadActivity is the load slot's reading with the tiny loads beside it:
// a measurement between two equal readings, both idle, ran beside no load.
func (p *Pool) loadActivity() (uint64, bool) {
	grants, busy := p.load.Activity()
	started, running := p.beside.activity()
	return grants + started, busy || running > 0
}

// besideReading is what a tiny load (itself counted as running) reads
// before and after it: alone says no other load ran in between.
type besideReading struct {
	grants, started uint64
	busy            bool
	running         int
}

func (p *Pool) besideReading() besideReading {
	var r besideReading
	r.grants, r.busy = p.load.Activity()
	r.started, r.running = p.beside.activity()
	return r
}

func (r besideReading) alone(after besideReading) bool {
	return !r.busy && !after.busy && r.grants == after.grants && r.started == after.started && r.running == 1 && after.running == 1
}

// admitRoom takes the load slot (at cost) and makes room for need() bytes
// (evicting, except e), waiting without the load slot while busy models
// hold the room. On success admitted runs under mu and the load slot stays
// held for the caller.
func (p *Pool) admitRoom(ctx context.Context, e *entry, cost int64, need func() int64, admitted func()) error {
	for {
		if err := p.load.Acquire(ctx, cost); err != nil {
			return err
		}
		p.mu.Lock()
		err := p.makeRoomLocked(need(), e)
		if err == nil {
			admitted()
			p.unlockAndNotify()
			return nil
		}
		p.load.Release()
		if err != errWaitForRelease {
			p.unlockAndNotify()
			return err
		}
		if err := p.waitFreedLocked(ctx); err != nil {
			p.unlockAndNotify()
			return err
		}
		p.unlockAndNotify()
	}
}

// waitFreedLocked releases mu until something is given back or ctx ends,
// and returns with mu held.
func (p *Pool) waitFreedLocked(ctx context.Context) error {
	ch := p.freed
	p.roomWaiters++
	p.unlockAndNotify()
	defer func() {
		p.mu.Lock()
		p.roomWaiters--
	}()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (p *Pool) failGrowLocked(e *entry, rejected bool) {
	p.abandonGrowLocked(e)
	if rejected {
		p.stats.Rejected++
	} else {
		p.stats.LoadFailures++
	}
}

// abandonGrowLocked ends a grow that added nothing and wakes e's waiters.
func (p *Pool) abandonGrowLocked(e *entry) {
	e.growing--
	e.guessing = false
	e.loading = false
	p.broadcastLocked(e)
}

// unmeasuredFactor/4 scales a heap measured before any invoke into the
// estimate accounted until the first invoke is measured: the shared models
// grow 1.0–2.3× at their first invoke (mobilenet v1 2.3×, v2 2.1×,
// deeplab 1.5×, the LSTM 1.3×).
const unmeasuredFactor = 9

// broadcastLocked wakes those waiting on e and on the pool's room. Waiters
// register under mu before they wait, so with none registered there is no
// one to wake and the hot path allocates no channels.
func (p *Pool) broadcastLocked(e *entry) {
	if e.waiters > 0 {
		close(e.changed)
		e.changed = make(chan struct{})
	}
	if p.roomWaiters > 0 {
		close(p.freed)
		p.freed = make(chan struct{})
	}
}

// unlockAndNotify releases mu, hands the frees queued under it to the
// reaper (which also returns freed C heap to the kernel), and runs the
// callbacks queued under it, in order.
func (p *Pool) unlockAndNotify() {
	ev, frees, trim := p.events, p.frees, p.freedC
	p.events, p.frees, p.freedC = nil, nil, false
	p.mu.Unlock()
	p.reaper.add(frees, trim)
	for _, f := range ev {
		f()
	}
}

// Interpreter is the leased interpreter; do not use it after Release.
func (l *Lease) Interpreter() *Interpreter {
	it, _ := l.it.(*Interpreter)
	return it
}

// Invoke runs the leased interpreter. Use it rather than the
// interpreter's own Invoke: the first invoke of an interpreter loaded for a
// request (its warm-up invoke was skipped, so the request's invoke is the
// first) also measures what that invoke adds to the C heap, about as much
// again as allocation for quantized models (weight packing): it replaces
// the estimate a model never measured is accounted at, and raises a known
// heap (a twin's record, say) that this device exceeds. A measurement
// that a free or another load ran beside is not used.
func (l *Lease) Invoke() error {
	p, e := l.p, l.e
	p.mu.Lock()
	pre, measure := e.unmeasured[l.it]
	delete(e.unmeasured, l.it)
	load, first := e.fresh[l.it]
	delete(e.fresh, l.it)
	cost, threads := p.invokeCostLocked(e), e.opts.Threads
	p.mu.Unlock()
	if l.e.resetVars {
		// Every request sees the interpreter as a fresh one would.
		if err := l.it.ResetVariables(); err != nil {
			return err
		}
	}
	// The turn first: the heap reading below must bracket this invoke,
	// not the wait for others.
	turn := p.gate.enter(cost, threads, l.notice)
	l.notice = nil
	var before int64
	var frees reaperActivity
	var loads uint64
	var loading, mixed bool
	var reading heapReading
	if measure {
		frees = p.reaper.activity()
		loads, loading = p.loadActivity()
		reading = p.readings.begin()
		before = p.loader.heapInUse()
	}
	t := time.Now()
	err := l.it.Invoke()
	took := invokeTime(l.it, time.Since(t))
	p.gate.leave(turn)
	var after int64
	if measure {
		after = p.loader.heapInUse()
		alone := p.readings.end(reading)
		// A free that ran meanwhile lowers the measurement; another load
		// (or reservation), or another first invoke, raises it. Neither is
		// this invoke's heap.
		freed := frees.busy || p.reaper.activity() != reaperActivity{epoch: frees.epoch}
		grants, busy := p.loadActivity()
		mixed = loading || busy || grants != loads || !alone
		measure = !freed && (pre.estimate || !mixed)
	}
	p.mu.Lock()
	switch {
	case err != nil:
	case first:
		e.costs.observe(load, took, e.spec.KnownSteady)
		e.estimateCold(load.Saved())
	default:
		e.costs.steady.add(took)
		p.workRate.observe(e.work, took)
	}
	if !measure {
		p.mu.Unlock()
		return err
	}
	heap := pre.pre + max(after-before, 0)
	if h, ok := e.heaps[l.it]; ok && err == nil {
		switch {
		case !pre.estimate:
			// A known heap is never lowered by one invoke's measurement, and
			// is raised when this device needs more.
			heap = max(heap, h)
		case mixed:
			// A mixed reading holds others' growth too: it only bounds the
			// estimate from above. Taken whole, a small pinned model read
			// beside a large load is charged the large one's heap and the
			// budget refuses models that fit.
			heap = min(heap, h)
		}
		if add := heap - h; add > 0 {
			// Best effort: the memory is in use already; evict what is idle.
			_ = p.makeRoomLocked(add, e)
		}
		e.heaps[l.it] = heap
		e.bytes += heap - h
		p.bytes += heap - h
		p.peak = max(p.peak, p.bytes)
		if e.knownHeap == 0 || e.gens[l.it] == e.gen {
			e.knownHeap = max(e.knownHeap, heap)
		}
		p.broadcastLocked(e)
	}
	p.unlockAndNotify()
	return err
}

// ModelID is the id the lease was acquired for.
func (l *Lease) ModelID() string { return l.e.spec.ID }

// Release returns the interpreter to the pool. Further calls do nothing.
func (l *Lease) Release() {
	if !l.done.CompareAndSwap(false, true) {
		return
	}
	p, e := l.p, l.e
	p.gate.forget(l.notice) // released without an invoke
	p.mu.Lock()
	e.leased--
	e.lastUsed = p.opts.Now()
	current := e.gens[l.it] == e.gen
	switch {
	case p.closed || e.removed || (!current && p.hasCurrentLocked(e)):
		p.dropInterpreterLocked(e, l.it)
		p.closeModelIfUnusedLocked(e)
	case current:
		// An interpreter with the current options replaces older ones.
		keep := e.idle[:0]
		for _, it := range e.idle {
			if e.gens[it] == e.gen {
				keep = append(keep, it)
			} else {
				p.dropInterpreterLocked(e, it)
			}
		}
		e.idle = append(keep, l.it)
	default:
		e.idle = append(e.idle, l.it)
	}
	p.broadcastLocked(e)
	p.unlockAndNotify()
}

// hasCurrentLocked reports whether e has an interpreter (idle or leased)
// made with its current options.
func (p *Pool) hasCurrentLocked(e *entry) bool {
	for _, g := range e.gens {
		if g == e.gen {
			return true
		}
	}
	return false
}

// Refresh warms an interpreter with id's current options when it is warm
// only with interpreters made before an Update changed them; the old ones
// then go. It reports whether it loaded anything.
func (p *Pool) Refresh(ctx context.Context, id string) (bool, error) {
	p.mu.Lock()
	e, ok := p.entries[id]
	if !ok || p.closed || e.removed || len(e.gens) == 0 || p.hasCurrentLocked(e) || e.growing > 0 {
		p.mu.Unlock()
		return false, nil
	}
	e.growing++
	p.mu.Unlock()
	it, err := p.grow(ctx, e, false)
	if err != nil {
		return false, err
	}
	(&Lease{p: p, e: e, it: it}).Release()
	return true, nil
}

// Prewarm warms one interpreter for id unless one is already warm, without
// counting as demand. It reports whether it loaded anything.
func (p *Pool) Prewarm(ctx context.Context, id string) (LoadReport, bool, error) {
	return p.prewarm(ctx, id, false)
}

// prewarm is Prewarm; a guess (PrewarmDue) makes room only from models
// worth less.
func (p *Pool) prewarm(ctx context.Context, id string, guess bool) (LoadReport, bool, error) {
	l, err := p.acquire(ctx, id, false, true, guess)
	if err != nil {
		return LoadReport{}, false, err
	}
	defer l.Release()
	p.mu.Lock()
	rep := l.e.last
	p.mu.Unlock()
	return rep, !l.Warm, nil
}

// SetReadRate sets PoolOptions.ReadRate (measured after the pool was made).
func (p *Pool) SetReadRate(bytesPerSec float64) {
	p.mu.Lock()
	p.opts.ReadRate = bytesPerSec
	p.mu.Unlock()
}

// storageExtra is what the next cold start of a model is expected to
// cost beyond the stages measured at its load: reading the part of the
// file that was not in the page cache then at the storage's read rate,
// when that is more than the page-in measured (the page cache dropped the
// model before, and will again: on a board short of memory, from an SD
// card at tens of MB/s).
func storageExtra(pageIn time.Duration, nonResident int64, rate float64) time.Duration {
	if rate <= 0 || nonResident <= 0 {
		return 0
	}
	est := time.Duration(float64(nonResident) / rate * float64(time.Second))
	return max(est-pageIn, 0)
}

// WaitFreed waits until the frees and munmaps of every eviction so far
// have run. A trace replay calls it between requests: its virtual clock
// jumps over the idle seconds in which they would have run, and without
// it the next request would share the cores with them.
func (p *Pool) WaitFreed() { p.reaper.drain() }

// SetPinned pins or unpins a registered model.
func (p *Pool) SetPinned(id string, pinned bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[id]
	if !ok {
		return &Error{Op: "pin " + id, Kind: ErrUnknownModel}
	}
	e.spec.Pinned = pinned
	return nil
}

// Update applies new facts about a registered model (a calibration that
// finished, a delegate chosen) without dropping a request: warm
// interpreters keep serving; when the interpreter options changed, they
// are replaced once an interpreter with the new options is warm (see
// Refresh). The path and id must stay the same.
func (p *Pool) Update(s ModelSpec) error {
	p.mu.Lock()
	e, ok := p.entries[s.ID]
	if !ok {
		p.mu.Unlock()
		return &Error{Op: "update " + s.ID, Kind: ErrUnknownModel}
	}
	if s.Path != e.spec.Path {
		p.mu.Unlock()
		return fmt.Errorf("update model %q: path changed from %q to %q (unregister and register it)", s.ID, e.spec.Path, s.Path)
	}
	opts := p.opts.Interpreter
	if s.Interpreter != nil {
		opts = *s.Interpreter
	}
	if !sameOptions(opts, e.opts) {
		// The interpreters made with the old options keep serving until one
		// made with the new ones is warm (Refresh, or the next load).
		e.gen++
	}
	// Field by field: ID, Path and Pinned (the pool's own state, see
	// SetPinned) stay, and loads read them without the lock.
	e.spec.Interpreter, e.spec.WarmInput, e.spec.PerModel = s.Interpreter, s.WarmInput, s.PerModel
	e.spec.KnownHeap, e.spec.KnownSteady, e.spec.KnownSaved = s.KnownHeap, s.KnownSteady, s.KnownSaved
	e.opts = opts
	if s.PerModel > 0 {
		e.perModel = s.PerModel
	}
	if s.KnownHeap > 0 {
		// A full measurement replaces a pre-invoke one in the accounting.
		for it, h := range e.heaps {
			if h < s.KnownHeap && e.gens[it] == e.gen {
				e.bytes += s.KnownHeap - h
				p.bytes += s.KnownHeap - h
				e.heaps[it] = s.KnownHeap
			}
		}
		p.peak = max(p.peak, p.bytes)
		e.knownHeap, e.lowHeap = s.KnownHeap, 0
	}
	if e.model != nil {
		e.estimateCold(e.last.Stages.Saved())
	}
	p.broadcastLocked(e)
	p.unlockAndNotify()
	return nil
}

func sameOptions(a, b Options) bool {
	if a.Threads != b.Threads || len(a.Delegates) != len(b.Delegates) {
		return false
	}
	for i := range a.Delegates {
		x, y := a.Delegates[i], b.Delegates[i]
		if x.Name != y.Name || x.Library != y.Library || len(x.Options) != len(y.Options) {
			return false
		}
		for k, v := range x.Options {
			if y.Options[k] != v {
				return false
			}
		}
	}
	return true
}

// Reservation is budget and the load slot held for work the pool does not
// run itself, such as a calibration load: its bytes count against the
// budget like a warm model's (evicting others to make room), and no pool
// load runs while it is held, so heap measurements do not mix.
type Reservation struct {
	p     *Pool
	bytes int64
	done  atomic.Bool
}

// Reserve waits for the load slot and for bytes of room in the budget.
// Release it as soon as the work is done: requests' loads wait for it.
func (p *Pool) Reserve(ctx context.Context, bytes int64) (*Reservation, error) {
	r := &Reservation{p: p, bytes: bytes}
	// Lowest priority: every waiting load goes first.
	err := p.admitRoom(ctx, nil, math.MaxInt64, func() int64 { return bytes }, func() {
		p.bytes += bytes
		p.reserved += bytes
		p.peak = max(p.peak, p.bytes)
	})
	if err != nil {
		return nil, fmt.Errorf("reserve %d bytes: %w", bytes, err)
	}
	return r, nil
}

// Grow raises the reservation to bytes (a measurement showed more is
// used), evicting idle models to keep the budget. It never waits: with
// nothing evictable the reservation is still raised and the overrun shows
// in Stats until Release.
func (r *Reservation) Grow(bytes int64) {
	p := r.p
	p.mu.Lock()
	if add := bytes - r.bytes; add > 0 {
		_ = p.makeRoomLocked(add, nil)
		p.bytes += add
		p.reserved += add
		r.bytes = bytes
		p.peak = max(p.peak, p.bytes)
	}
	p.unlockAndNotify()
}

// Release gives the bytes and the load slot back. Further calls do nothing.
func (r *Reservation) Release() {
	if !r.done.CompareAndSwap(false, true) {
		return
	}
	p := r.p
	p.mu.Lock()
	p.bytes -= r.bytes
	p.reserved -= r.bytes
	if p.roomWaiters > 0 {
		close(p.freed)
		p.freed = make(chan struct{})
	}
	p.unlockAndNotify()
	p.load.Release()
}

// Stats returns the counters and current usage.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.BytesInUse = p.bytes
	s.PeakBytes = p.peak
	s.Reserved = p.reserved
	s.Budget = p.opts.Budget
	s.ReadRate = p.opts.ReadRate
	for _, e := range p.entries {
		if len(e.idle)+e.leased > 0 {
			s.WarmModels++
		}
		s.Interpreters += len(e.idle) + e.leased
		s.Leased += e.leased
	}
	return s
}

// Models describes every registered model, sorted by id.
func (p *Pool) Models() []ModelStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ModelStatus, 0, len(p.entries))
	for id, e := range p.entries {
		out = append(out, ModelStatus{ID: id, Path: e.spec.Path, Pinned: e.spec.Pinned, Warm: len(e.idle)+e.leased > 0, Mapped: e.model != nil,
			Interpreters: len(e.idle) + e.leased, Leased: e.leased, Loading: e.growing > 0, Bytes: e.bytes, Loads: e.loads, LastLoad: e.last, ColdMs: ms(e.cold)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Activity is how many interpreters are leased now and when the latest
// request came: background work (calibration) waits while requests come.
func (p *Pool) Activity() (leased int, lastDemand time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.entries {
		leased += e.leased + e.waiters
	}
	return leased, p.lastDemand
}

// Busy reports whether anything uses the pool now: a lease, a wait, a
// load in flight, or a request whose model is being registered (Resolve).
// Background work that would share the cores with requests waits for it.
func (p *Pool) Busy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resolving > 0 {
		return true
	}
	for _, e := range p.entries {
		if e.leased+e.waiters+e.growing > 0 {
			return true
		}
	}
	return false
}

// IsWarm reports whether model id has an interpreter ready or in use.
func (p *Pool) IsWarm(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[id]
	return ok && len(e.idle)+e.leased > 0
}

// Close frees every idle interpreter and model, and returns once they are
// freed; interpreters still leased are freed after their Release. Acquire
// fails afterwards.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for _, e := range p.entries {
		p.freeIdleLocked(e)
		p.broadcastLocked(e)
	}
	p.unlockAndNotify()
	p.reaper.drain()
	return nil
}
