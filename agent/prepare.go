package agent

import (
	"fmt"
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

// validity is the key facts about a model file are stored under.
func (a *Agent) validity(digest, options string) storage.Validity {
	return storage.Validity{Model: digest, Runtime: a.opts.RuntimeVersion, Hardware: a.tel.report.Fingerprint, Options: options}
}

// modelState is what the agent knows about one configured model. The
// fields are guarded by Agent.mapsMu; a state is replaced, not reused,
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
	// (versionKeeper).
	keepLater bool
	// servable: the file mapped and verified; the pool serves it.
	servable bool
	// failed is why the model cannot run here (its file, its
	// calibration); loadErr the latest failed load, cleared by a good one.
	failed, loadErr *ErrorReport
}

// register settles how model m is served from now on (called with prepMu
// held): it maps and verifies the file, hashes it (cached by identity) and
// restores what the state knows (delegate outcomes, calibration), with
// safe defaults when nothing is known: CPU, min(cores, max_threads)
// threads, like a naive loader. admitModel then puts it in the pool.
// Whatever needs measuring is queued for the background calibrator;
// nothing here loads an interpreter.
func (a *Agent) register(m ModelConfig) *modelState { return a.registerFrom(m, m.Path, false) }

// registerFrom is register with the bytes read from src: the configured
// path, or a kept version (a rollback). With keepLater (a start), a
// version not kept yet is copied unsynced and st.keepLater says the
// caller syncs and records it once the model is admitted (versionKeeper).
func (a *Agent) registerFrom(m ModelConfig, src string, keepLater bool) *modelState {
	st := &modelState{cfg: m, path: src, source: src}
	st.report = ModelReport{ID: m.ID, Path: m.Path, Pinned: m.Pinned, Delegate: DelegateReport{Chosen: "cpu", Tried: []DelegateTry{}}}
	if m.Labels != "" {
		labels, err := infer.ReadLabels(m.Labels)
		if err != nil {
			a.log.Warn("labels not read; answers carry indexes only", "model", m.ID, "err", err)
		}
		st.labels = labels
	}
	// Read once per file identity: a restart with the same file reads
	// nothing here (its digest and facts are in the state file).
	facts, cached, err := a.facts.of(src)
	if err != nil {
		return a.failModel(st, err)
	}
	digest, needsAccel := facts.Digest, facts.NeedsEdgeTPU
	st.digest, st.report.SHA256, st.report.DigestCached = digest, digest, cached
	switch {
	case src != m.Path:
	case !keepLater || a.upd.Kept(m.ID, digest):
		st.source = a.upd.Pin(m.ID, m.Path, digest)
	default:
		// Served from the copy at once (never from a path a deployment
		// may rewrite in place); its sync and record come later.
		st.source, st.keepLater = a.upd.PinUnsynced(m.ID, m.Path, digest), true
	}
	st.needsAccel = needsAccel
	a.settleDelegates(st, false)
	if err := a.restoreCalibration(st); err != nil {
		return a.failModel(st, err)
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
func (a *Agent) admitModel(st *modelState, replace bool) *modelState {
	if !st.servable {
		return st
	}
	spec := a.modelSpec(st)
	var err error
	if replace {
		err = a.pool.Replace(spec)
	} else {
		err = a.pool.Register(spec)
	}
	if err != nil {
		st.servable, st.queued = false, false
		return a.failModel(st, err)
	}
	return st
}

// failModel records err as st's failure; requests for the model get its code.
func (a *Agent) failModel(st *modelState, err error) *modelState {
	st.failed = errorReport(err)
	st.report.Error = st.failed
	a.log.Error("model not usable", "model", st.cfg.ID, "path", st.cfg.Path, "code", tflite.Code(err), "err", err)
	return st
}

// settleDelegates picks the delegate st runs on from what the state knows;
// with attempt, it tries the delegates nothing is known about (loading the
// model: the calibrator's work). Without a working delegate an accelerator
// model is served by its CPU twin.
func (a *Agent) settleDelegates(st *modelState, attempt bool) {
	m := st.cfg
	st.chosen, st.delegatesPending = nil, false
	st.report.Delegate = DelegateReport{Chosen: "cpu", Tried: []DelegateTry{}}
	for _, name := range m.Delegates {
		d, _ := a.config().delegate(name) // validated
		spec := tflite.DelegateSpec{Name: d.Name, Library: d.Library, Options: d.Options}
		try, known := a.knownDelegate(m, st.digest, spec)
		if !known && !attempt {
			st.delegatesPending = true
			break
		}
		if !known {
			try = a.tryDelegate(m, st.digest, spec)
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
			a.log.Warn("no delegate works for an accelerator model; serving its CPU twin", "model", m.ID, "cpu_twin", m.CPUTwin)
		}
		st.path, st.report.Delegate.Fallback = m.CPUTwin, m.CPUTwin
	}
}

// restoreCalibration looks up the calibration valid for how st runs now.
func (a *Agent) restoreCalibration(st *modelState) error {
	digest := st.digest
	if st.path != st.source {
		d, cached, err := tflite.Digest(st.path, a.facts)
		if err != nil {
			return err
		}
		digest, st.report.SHA256, st.report.DigestCached = d, d, cached
	}
	v := a.calibrationKey(digest, st.report.Delegate.Chosen)
	cal, look, err := a.store.Calibration(st.cfg.ID, v)
	if err != nil {
		a.log.Error("calibration not readable; measuring again", "model", st.cfg.ID, "err", err)
		look = storage.Lookup{Status: storage.New}
	}
	st.report.Calibration = look
	st.cal = storage.Calibration{}
	if look.Status != storage.Restored {
		st.report.Threads = a.defaultThreads()
		return nil
	}
	switch {
	case cal.Pending:
		// Begun and never finished: the process died inside it.
		st.failed = &ErrorReport{Code: "calibration_crashed", Message: "the process died while calibrating this model; not measured again for this model, runtime and board"}
		st.report.Error = st.failed
		st.report.Threads = a.defaultThreads()
		a.log.Error("calibration crashed the process last time; not trying again", "model", st.cfg.ID)
		a.tel.event("calibration_crashed", map[string]any{"model": st.cfg.ID})
		return nil
	case cal.Failed != "":
		st.failed = &ErrorReport{Code: cal.Failed, Message: cal.FailedMessage}
		st.report.Error = st.failed
		st.report.Threads = a.defaultThreads()
		return nil
	}
	a.log.Info("calibration restored", "model", st.cfg.ID, "threads", cal.Threads, "source", cal.Source)
	a.useCalibration(st, cal)
	return nil
}

// calibrationKey is the validity key of a model's calibration.
func (a *Agent) calibrationKey(digest, delegate string) storage.Validity {
	threads := "auto"
	if a.config().Pool.Threads > 0 {
		threads = strconv.Itoa(a.config().Pool.Threads)
	}
	return a.validity(digest, "threads="+threads+",delegate="+delegate)
}

// defaultThreads is what an uncalibrated model runs with: the configured
// count, or one per core up to calibration.max_threads.
func (a *Agent) defaultThreads() int {
	if t := a.config().Pool.Threads; t > 0 {
		return t
	}
	return max(1, min(runtime.NumCPU(), a.config().Calibration.MaxThreads))
}

// modelSpec is how the pool loads st: calibrated, or with the defaults.
func (a *Agent) modelSpec(st *modelState) tflite.ModelSpec {
	threads := st.cal.Threads
	if threads == 0 {
		threads = a.defaultThreads()
	}
	stages := tflite.Stages(st.cal.Stages)
	return tflite.ModelSpec{ID: st.cfg.ID, Path: st.path, Version: st.digest, Pinned: st.cfg.Pinned, Stateful: st.cfg.Stateful, KnownHeap: st.cal.HeapBytes,
		KnownSteady: st.cal.Stages.Steady, KnownSaved: stages.Saved(), KnownMisses: st.cal.LearnedMisses,
		Interpreter: &tflite.Options{Threads: threads, Delegates: st.chosen}, Facts: a.facts.known(st.path)}
}

// knownDelegate is what the state knows about delegate spec for the model.
func (a *Agent) knownDelegate(m ModelConfig, digest string, spec tflite.DelegateSpec) (DelegateTry, bool) {
	v := a.validity(digest, "delegate="+spec.Name+"@"+spec.Library)
	try := DelegateTry{Name: spec.Name}
	rec, look, err := a.store.Delegate(m.ID, spec.Name, v)
	if err != nil {
		a.log.Error("delegate state not readable; trying again", "model", m.ID, "delegate", spec.Name, "err", err)
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
		a.log.Info("delegate skipped", "model", m.ID, "delegate", spec.Name, "state", rec.State, "reason", rec.Reason)
	}
	return try, true
}

// tryDelegate tries delegate spec for the model: an attempt record goes to
// disk first, so a crash inside the delegate is found on the next start
// and the delegate is never tried again.
func (a *Agent) tryDelegate(m ModelConfig, digest string, spec tflite.DelegateSpec) DelegateTry {
	v := a.validity(digest, "delegate="+spec.Name+"@"+spec.Library)
	try, _ := a.knownDelegate(m, digest, spec)
	if err := a.store.BeginDelegateAttempt(m.ID, spec.Name, v); err != nil {
		// Without the attempt record a crash would go unnoticed: do not try.
		try.State, try.Reason = storage.Failed, "attempt not recorded: "+err.Error()
		return try
	}
	attemptErr := attemptDelegate(m.Path, spec)
	if err := a.store.EndDelegateAttempt(m.ID, spec.Name, v, attemptErr); err != nil {
		a.log.Error("delegate outcome not recorded", "model", m.ID, "delegate", spec.Name, "err", err)
	}
	try.State = storage.Worked
	if attemptErr != nil {
		try.State, try.Reason = storage.Failed, attemptErr.Error()
		a.log.Warn("delegate failed", "model", m.ID, "delegate", spec.Name, "err", attemptErr)
		a.tel.event("delegate_failed", map[string]any{"model": m.ID, "delegate": spec.Name, "reason": attemptErr.Error()})
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
