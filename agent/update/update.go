// Package update stages, checks, promotes and rolls back new versions of
// serving models: the Manager, the guard watching an update's first
// requests (guard.go), the parity ring replayed through a staged version
// (parity.go), the kept version files (versions.go) and where an update is
// staged (stage.go). See README "Model updates".
package update

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// Pool is what the updates ask of the interpreter pool (*tflite.Pool).
type Pool interface {
	Register(s tflite.ModelSpec) error
	Unregister(id string) error
	Prewarm(ctx context.Context, id string) (tflite.LoadReport, bool, error)
	Drain(ctx context.Context, id string) (resume func(), err error)
	Promote(staged, id string) (time.Time, error)
	Acquire(ctx context.Context, id string) (*tflite.Lease, error)
}

// Store is where the versions of each model are recorded (*storage.Store).
type Store interface {
	Versions(id string) (storage.Versions, error)
	UpdateVersions(id string, fn func(*storage.Versions)) error
}

// Host is the agent side of an update.
type Host interface {
	// Current is the version of model id serving now.
	Current(id string) (Model, bool)
	// Commit makes to serve in place of from, under the agent's locks:
	// when from still serves, swap is called (it promotes the staged
	// version in the pool) and, when it succeeds, the agent's record of
	// the model becomes to. It returns ErrSuperseded when from no longer
	// serves, else swap's error.
	Commit(from, to Model, swap func() error) error
	// Spec is how the pool loads m (its calibration as known now).
	Spec(m Model) tflite.ModelSpec
	// Prepare registers cur's model from path (a kept version), for a
	// rollback.
	Prepare(cur Model, path string) Model
	// Event publishes an event.
	Event(kind string, fields map[string]any)
}

// ErrSuperseded: the version an update was to replace no longer serves.
var ErrSuperseded = errors.New("superseded")

// Model is one version of a model as the updates see it.
type Model struct {
	ID       string
	Digest   string
	Path     string // what the pool serves
	Servable bool
	Checks   Checks
	// State is the host's own record of this version, handed back to it.
	State any
}

// Checks are a model's configured update checks.
type Checks struct {
	AllowSignatureChange bool
	GoldenInput          string
	GoldenTop1           *int
	MinAgreement         float64
}

// Settings are the configuration the updates read, current at each call.
type Settings struct {
	StateDir          string
	KeepPreviousBytes int64
	RollbackWindow    int
	AutoRollback      bool
	MaxImagePixels    int
}

// Options are what a Manager needs. Pool, Store and RunCtx are read when
// used: the agent opens them at its start.
type Options struct {
	Log      *slog.Logger
	Host     Host
	Pool     func() Pool
	Store    func() Store
	Settings func() Settings
	// Facts caches file digests by identity (the kept files); Inspect is
	// tflite.Inspect once per file content (the checks: the serving
	// version's file was inspected when it was admitted); Decodes bounds
	// image decodes.
	Facts   func() tflite.DigestCache
	Inspect func(path string) (tflite.ModelInfo, error)
	Decodes func() *infer.DecodeBudget
	Now     func() time.Time
	// RunCtx is the agent's run context (nil before its start); Spawn runs
	// an owned goroutine under it.
	RunCtx func() context.Context
	Spawn  func(ctx context.Context, f func(context.Context))
	// Rewarm warms a model back in the background.
	Rewarm func(id string)
	// Quiet returns once requests leave the pool alone (or when its ctx
	// is done): a start's keep of a model's version (KeepLater) waits for
	// it. Nil: keeps run at once.
	Quiet func(ctx context.Context) error
	// BeforeKeep, when set, runs before a start's keep of a model's
	// version (KeepLater): tests hold it there.
	BeforeKeep func(model string)
	// ParityRing and ParityRingBytes bound the parity ring.
	ParityRing      int
	ParityRingBytes int64
}

// Manager runs the updates of every model.
type Manager struct {
	o      Options
	log    *slog.Logger
	parity *parityRing // recent requests per model, replayed through updates
	// keeps are the start's keeps under way: an update or rollback of a
	// model waits for its keep first.
	keeps *keeper

	// mu guards updates (versions being staged), guards (updates whose
	// first requests are watched) and outcomes (recent request results).
	// It is taken under the agent's prep lock (a guard starts inside Commit's
	// swap) and never held while calling the Host or the Pool.
	mu       sync.Mutex
	updates  map[string]*pendingUpdate
	guards   map[string]*updateGuard
	outcomes map[string]*outcomes
}

// New returns a Manager.
func New(o Options) *Manager {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Inspect == nil {
		o.Inspect = func(path string) (tflite.ModelInfo, error) { return tflite.Inspect(path, nil) }
	}
	return &Manager{o: o, log: o.Log, parity: newParityRing(o.ParityRing, o.ParityRingBytes), keeps: newKeeper(o.Quiet, o.BeforeKeep),
		updates: map[string]*pendingUpdate{}, guards: map[string]*updateGuard{}, outcomes: map[string]*outcomes{}}
}

func (m *Manager) pool() Pool                       { return m.o.Pool() }
func (m *Manager) store() Store                     { return m.o.Store() }
func (m *Manager) settings() Settings               { return m.o.Settings() }
func (m *Manager) event(k string, f map[string]any) { m.o.Host.Event(k, f) }

// Forget drops model id's recent requests (the model was removed).
func (m *Manager) Forget(id string) { m.parity.forget(id) }

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
