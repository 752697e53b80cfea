package agent

import (
	"fmt"
	"log/slog"
	"runtime"
	"strconv"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// digestCache stores model digests in the state file, keyed by file
// identity, so a restart does not hash every model again.
type digestCache struct{ s *storage.Store }

func fileKey(id tflite.FileID) string {
	return fmt.Sprintf("%d:%d:%d:%d:%d", id.Dev, id.Ino, id.Size, id.MtimeNs, id.CtimeNs)
}

func (c digestCache) LookupDigest(id tflite.FileID) (string, bool) {
	return c.s.LookupDigest(fileKey(id))
}
func (c digestCache) StoreDigest(id tflite.FileID, d string) error {
	return c.s.StoreDigest(fileKey(id), d)
}

// preparer settles how each model is served: its file's facts, its
// delegate, its calibration, and its spec for the pool. It loads nothing
// itself but a delegate's one attempt (with attempt); the calibrator
// measures.
type preparer struct{ d preparerDeps }

// preparerDeps is what preparing a model asks of the agent.
type preparerDeps struct {
	log         *slog.Logger
	config      func() *Config
	runtime     string        // the TFLite runtime's version, part of every key
	fingerprint func() string // the board's, part of every key (after the start opens the state)
	store       func() *storage.Store
	pool        func() *tflite.Pool
	facts       func() *fileFacts
	versions    versionPins
	event       func(kind string, fields map[string]any)
}

// versionPins is what preparing asks of the kept versions: the copy a
// model is served from (agent/update).
type versionPins interface {
	Kept(id, digest string) bool
	Pin(id, path, digest string) string
	PinUnsynced(id, path, digest string) string
}

// validity is the key facts about a model file are stored under.
func (p *preparer) validity(digest, options string) storage.Validity {
	return storage.Validity{Model: digest, Runtime: p.d.runtime, Hardware: p.d.fingerprint(), Options: options}
}

// modelState is what the agent knows about one configured model. The
// fields are guarded by the registry's mu; a state is replaced, not reused,
// when its model is registered again (reload), so background work can
// tell whether what it measured is still wanted.
type modelState struct {
	cfg    ModelConfig
	report ModelReport
	labels []string
	// source is the file this version is served from: its kept copy
	// under the state dir (agent/update/versions.go), or the configured path.
	source string
	// path is what the pool serves: source, or the model's CPU twin.
	path   string
	digest string
	chosen []tflite.DelegateSpec
	// cal is restored or measured; zero (Threads 0) while unknown.
	cal storage.Calibration
	// queued: waiting for the calibrator; calibrating: being measured.
	queued, calibrating bool
	// delegatesPending: a configured delegate was never tried here.
	delegatesPending bool
	// needsAccel: the model was compiled for an accelerator (Edge TPU).
	needsAccel bool
	// keepLater: this version's copy under the state dir is not synced
	// nor recorded yet; the start does it after admitting the model
	// (update.Manager.KeepLater).
	keepLater bool
	// servable: the file mapped and verified; the pool serves it.
	servable bool
	// failed is why the model cannot run here (its file, its
	// calibration); loadErr the latest failed load, cleared by a good one.
	failed, loadErr *ErrorReport
}

// registerFrom settles how model m is served from now on (called with the
// registry's prep lock held, or on a claimed pending model): it maps and
// verifies the file at src (the configured path, or a kept version: a
// rollback), hashes it (cached by identity) and restores what the state
// knows (delegate outcomes, calibration), with safe defaults when nothing
// is known: CPU, min(cores, max_threads) threads, like a naive loader.
// admitModel then puts it in the pool. Whatever needs measuring is queued
// for the background calibrator; nothing here loads an interpreter.
//
// With keepLater (a start, a model a rescan adds), a version not kept yet
// is copied unsynced and st.keepLater says the caller syncs and records it
// once the model is admitted (update.Manager.KeepLater).
func (p *preparer) registerFrom(m ModelConfig, src string, keepLater bool) *modelState {
	st := &modelState{cfg: m, path: src, source: src}
	st.report = ModelReport{ID: m.ID, Path: m.Path, Pinned: m.Pinned, Delegate: DelegateReport{Chosen: "cpu", Tried: []DelegateTry{}}}
	if m.Labels != "" {
		labels, err := infer.ReadLabels(m.Labels)
		if err != nil {
			p.d.log.Warn("labels not read; answers carry indexes only", "model", m.ID, "err", err)
		}
		st.labels = labels
	}
	// Read once per file identity: a restart with the same file reads
	// nothing here (its digest and facts are in the state file).
	facts, cached, err := p.d.facts().of(src)
	if err != nil {
		return p.failModel(st, err)
	}
	digest, needsAccel := facts.Digest, facts.NeedsEdgeTPU
	st.digest, st.report.SHA256, st.report.DigestCached = digest, digest, cached
	switch {
	case src != m.Path:
	case !keepLater || p.d.versions.Kept(m.ID, digest):
		st.source = p.d.versions.Pin(m.ID, m.Path, digest)
	default:
		// Served from the copy at once (never from a path a deployment
		// may rewrite in place); its sync and record come later.
		st.source, st.keepLater = p.d.versions.PinUnsynced(m.ID, m.Path, digest), true
	}
	st.needsAccel = needsAccel
	p.settleDelegates(st, false)
	if err := p.restoreCalibration(st); err != nil {
		return p.failModel(st, err)
	}
	st.servable = true
	// A model whose calibration failed (or crashed) for this key keeps its
	// defaults: it is not measured again.
	// A twin's record not yet verified here is verified in the background.
	st.queued = st.failed == nil && (st.cal.Threads == 0 || st.delegatesPending || st.needsVerifying())
	return st
}

// admitModel puts a servable st in the pool: registered, or (replace) in
// place of the version it updates, with no moment in which the id is
// missing. A model that cannot be served stays out, with its failure.
func (p *preparer) admitModel(st *modelState, replace bool) *modelState {
	if !st.servable {
		return st
	}
	spec := p.modelSpec(st)
	var err error
	if replace {
		err = p.d.pool().Replace(spec)
	} else {
		err = p.d.pool().Register(spec)
	}
	if err != nil {
		st.servable, st.queued = false, false
		return p.failModel(st, err)
	}
	return st
}

// failModel records err as st's failure; requests for the model get its code.
func (p *preparer) failModel(st *modelState, err error) *modelState {
	st.failed = errorReport(err)
	st.report.Error = st.failed
	p.d.log.Error("model not usable", "model", st.cfg.ID, "path", st.cfg.Path, "code", tflite.Code(err), "err", err)
	return st
}

// settleDelegates picks the delegate st runs on from what the state knows;
// with attempt, it tries the delegates nothing is known about (loading the
// model: the calibrator's work). Without a working delegate an accelerator
// model is served by its CPU twin.
func (p *preparer) settleDelegates(st *modelState, attempt bool) {
	m := st.cfg
	st.chosen, st.delegatesPending = nil, false
	st.report.Delegate = DelegateReport{Chosen: "cpu", Tried: []DelegateTry{}}
	for _, name := range m.Delegates {
		d, _ := p.d.config().delegate(name) // validated
		spec := tflite.DelegateSpec{Name: d.Name, Library: d.Library, Options: d.Options}
		try, known := p.knownDelegate(m, st.digest, spec)
		if !known && !attempt {
			st.delegatesPending = true
			break
		}
		if !known {
			try = p.tryDelegate(m, st.digest, spec)
		}
		st.report.Delegate.Tried = append(st.report.Delegate.Tried, try)
		if try.State == storage.Worked {
			st.report.Delegate.Chosen = name
			st.chosen = []tflite.DelegateSpec{spec}
			break
		}
	}
	st.path, st.report.Delegate.Fallback = st.source, ""
	// Only a configured twin makes the question worth a mapping: without
	// one, an accelerator model fails with model_needs_delegate.
	if len(st.chosen) == 0 && m.CPUTwin != "" && st.needsAccel {
		if !st.delegatesPending {
			p.d.log.Warn("no delegate works for an accelerator model; serving its CPU twin", "model", m.ID, "cpu_twin", m.CPUTwin)
		}
		st.path, st.report.Delegate.Fallback = m.CPUTwin, m.CPUTwin
	}
}

// restoreCalibration looks up the calibration valid for how st runs now.
func (p *preparer) restoreCalibration(st *modelState) error {
	digest := st.digest
	if st.path != st.source {
		d, cached, err := tflite.Digest(st.path, p.d.facts())
		if err != nil {
			return err
		}
		digest, st.report.SHA256, st.report.DigestCached = d, d, cached
	}
	v := p.calibrationKey(digest, st.report.Delegate.Chosen)
	cal, look, err := p.d.store().Calibration(st.cfg.ID, v)
	if err != nil {
		p.d.log.Error("calibration not readable; measuring again", "model", st.cfg.ID, "err", err)
		look = storage.Lookup{Status: storage.New}
	}
	st.report.Calibration = look
	st.cal = storage.Calibration{}
	if look.Status != storage.Restored {
		st.report.Threads = p.defaultThreads()
		return nil
	}
	switch {
	case cal.Pending:
		// Begun and never finished: the process died inside it.
		st.failed = &ErrorReport{Code: "calibration_crashed", Message: "the process died while calibrating this model; not measured again for this model, runtime and board"}
		st.report.Error = st.failed
		st.report.Threads = p.defaultThreads()
		p.d.log.Error("calibration crashed the process last time; not trying again", "model", st.cfg.ID)
		p.d.event("calibration_crashed", map[string]any{"model": st.cfg.ID})
		return nil
	case cal.Failed != "":
		st.failed = &ErrorReport{Code: cal.Failed, Message: cal.FailedMessage}
		st.report.Error = st.failed
		st.report.Threads = p.defaultThreads()
		return nil
	}
	p.d.log.Info("calibration restored", "model", st.cfg.ID, "threads", cal.Threads, "source", cal.Source)
	st.useCalibration(cal)
	return nil
}

// calibrationKey is the validity key of a model's calibration.
func (p *preparer) calibrationKey(digest, delegate string) storage.Validity {
	threads := "auto"
	if p.d.config().Pool.Threads > 0 {
		threads = strconv.Itoa(p.d.config().Pool.Threads)
	}
	return p.validity(digest, "threads="+threads+",delegate="+delegate)
}

// defaultThreads is what an uncalibrated model runs with: the configured
// count, or one per core up to calibration.max_threads.
func (p *preparer) defaultThreads() int {
	if t := p.d.config().Pool.Threads; t > 0 {
		return t
	}
	return max(1, min(runtime.NumCPU(), p.d.config().Calibration.MaxThreads))
}

// modelSpec is how the pool loads st: calibrated, or with the defaults.
func (p *preparer) modelSpec(st *modelState) tflite.ModelSpec {
	threads := st.cal.Threads
	if threads == 0 {
		threads = p.defaultThreads()
	}
	stages := tflite.Stages(st.cal.Stages)
	return tflite.ModelSpec{ID: st.cfg.ID, Path: st.path, Version: st.digest, Pinned: st.cfg.Pinned, Stateful: st.cfg.Stateful, KnownHeap: st.cal.HeapBytes,
		KnownSteady: st.cal.Stages.Steady, KnownSaved: stages.Saved(), KnownMisses: st.cal.LearnedMisses,
		Interpreter: &tflite.Options{Threads: threads, Delegates: st.chosen}, Facts: p.d.facts().known(st.path)}
}

// knownDelegate is what the state knows about delegate spec for the model.
func (p *preparer) knownDelegate(m ModelConfig, digest string, spec tflite.DelegateSpec) (DelegateTry, bool) {
	v := p.validity(digest, "delegate="+spec.Name+"@"+spec.Library)
	try := DelegateTry{Name: spec.Name}
	rec, look, err := p.d.store().Delegate(m.ID, spec.Name, v)
	if err != nil {
		p.d.log.Error("delegate state not readable; trying again", "model", m.ID, "delegate", spec.Name, "err", err)
		look = storage.Lookup{Status: storage.New}
	}
	try.Status = look.Status
	if look.Status == storage.Invalidated {
		try.InvalidatedBy = look.Reason
	}
	if look.Status != storage.Restored {
		return try, false
	}
	try.State, try.Reason = rec.State, rec.Reason
	if rec.State != storage.Worked {
		p.d.log.Info("delegate skipped", "model", m.ID, "delegate", spec.Name, "state", rec.State, "reason", rec.Reason)
	}
	return try, true
}

// tryDelegate tries delegate spec for the model: an attempt record goes to
// disk first, so a crash inside the delegate is found on the next start
// and the delegate is never tried again.
func (p *preparer) tryDelegate(m ModelConfig, digest string, spec tflite.DelegateSpec) DelegateTry {
	v := p.validity(digest, "delegate="+spec.Name+"@"+spec.Library)
	try, _ := p.knownDelegate(m, digest, spec)
	if err := p.d.store().BeginDelegateAttempt(m.ID, spec.Name, v); err != nil {
		// Without the attempt record a crash would go unnoticed: do not try.
		try.State, try.Reason = storage.Failed, "attempt not recorded: "+err.Error()
		return try
	}
	attemptErr := attemptDelegate(m.Path, spec)
	if err := p.d.store().EndDelegateAttempt(m.ID, spec.Name, v, attemptErr); err != nil {
		p.d.log.Error("delegate outcome not recorded", "model", m.ID, "delegate", spec.Name, "err", err)
	}
	try.State = storage.Worked
	if attemptErr != nil {
		try.State, try.Reason = storage.Failed, attemptErr.Error()
		p.d.log.Warn("delegate failed", "model", m.ID, "delegate", spec.Name, "err", attemptErr)
		p.d.event("delegate_failed", map[string]any{"model": m.ID, "delegate": spec.Name, "reason": attemptErr.Error()})
	}
	return try
}

// attemptDelegate runs the model once with the delegate: creation,
// allocation and a warm-up invoke are where a delegate fails or crashes.
func attemptDelegate(path string, spec tflite.DelegateSpec) error {
	m, it, _, err := tflite.LoadStaged(path, tflite.LoadOptions{
		Interpreter: tflite.Options{Delegates: []tflite.DelegateSpec{spec}},
		Warm:        tflite.WarmOptions{SkipSteady: true},
	})
	if err != nil {
		return err
	}
	it.Close()
	return m.Close()
}

// modelFailure is a model's recorded failure as an error with its code.
type modelFailure struct {
	id string
	r  *ErrorReport
}

func (e *modelFailure) Error() string { return fmt.Sprintf("model %q: %s", e.id, e.r.Message) }
func (e *modelFailure) Code() string  { return e.r.Code }
