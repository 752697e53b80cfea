package agent

import (
	"fmt"
	"strconv"
	"time"

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
	return storage.Validity{Model: digest, Runtime: a.opts.RuntimeVersion, Hardware: a.report.Fingerprint, Options: options}
}

// prepare settles how model m runs here (called with prepMu held): its delegate (or CPU, or its CPU
// twin) and its calibration, restored when still valid, measured otherwise.
// It registers the model with the pool unless it cannot run.
func (a *Agent) prepare(m ModelConfig) ModelReport {
	mr := ModelReport{ID: m.ID, Path: m.Path, Pinned: m.Pinned, Delegate: DelegateReport{Chosen: "cpu", Tried: []DelegateTry{}}}
	fail := func(err error) ModelReport {
		mr.Error = errorReport(err)
		a.log.Error("model not usable", "model", m.ID, "path", m.Path, "code", tflite.Code(err), "err", err)
		return mr
	}
	digest, cached, err := tflite.Digest(m.Path, digestCache{a.store})
	if err != nil {
		if _, perr := tflite.LoadModel(m.Path); perr != nil {
			err = perr // the model's own kind of failure says more
		}
		return fail(err)
	}
	mr.SHA256, mr.DigestCached = digest, cached

	path := m.Path
	var chosen []tflite.DelegateSpec
	for _, name := range m.Delegates {
		d, _ := a.config().delegate(name) // validated
		spec := tflite.DelegateSpec{Name: d.Name, Library: d.Library, Options: d.Options}
		try := a.tryDelegate(m, digest, spec)
		mr.Delegate.Tried = append(mr.Delegate.Tried, try)
		if try.State == storage.Worked {
			mr.Delegate.Chosen = name
			chosen = []tflite.DelegateSpec{spec}
			break
		}
	}
	// Only a configured twin makes the question worth a mapping: without
	// one, an accelerator model fails calibration with model_needs_delegate.
	if len(chosen) == 0 && m.CPUTwin != "" && needsAccelerator(path) {
		a.log.Warn("no delegate works for an accelerator model; serving its CPU twin", "model", m.ID, "cpu_twin", m.CPUTwin)
		path = m.CPUTwin
		mr.Delegate.Fallback = m.CPUTwin
		if digest, mr.DigestCached, err = tflite.Digest(path, digestCache{a.store}); err != nil {
			return fail(err)
		}
		mr.SHA256 = digest
	}

	threads := "auto"
	if a.config().Pool.Threads > 0 {
		threads = strconv.Itoa(a.config().Pool.Threads)
	}
	v := a.validity(digest, "threads="+threads+",delegate="+mr.Delegate.Chosen)
	cal, look, err := a.store.Calibration(m.ID, v)
	if err != nil {
		a.log.Error("calibration not readable; measuring again", "model", m.ID, "err", err)
		look = storage.Lookup{Status: storage.New}
	}
	mr.Calibration = look
	if look.Status != storage.Restored {
		t := time.Now()
		c := calibration{Runs: a.config().Calibration.Runs, Steady: a.config().Calibration.SteadyInvokes, MaxThreads: a.config().Calibration.MaxThreads, PageIn: a.config().pageIn()}
		if cal, err = c.run(path, a.config().Pool.Threads, chosen); err != nil {
			return fail(err)
		}
		cal.Validity = v
		mr.CalibrationTime = time.Since(t)
		if err := a.store.PutCalibration(m.ID, cal); err != nil {
			// Not fatal: the model serves; the next start measures again.
			a.log.Error("calibration not stored", "model", m.ID, "err", err)
		}
		a.log.Info("model calibrated", "model", m.ID, "status", look.Status, "reason", look.Reason,
			"threads", cal.Threads, "calibration_ms", ms(mr.CalibrationTime))
	} else {
		a.log.Info("calibration restored", "model", m.ID, "threads", cal.Threads)
	}
	mr.Threads = cal.Threads
	mr.Calibrated = &cal
	a.calib[m.ID] = cal
	if m.Labels != "" {
		labels, err := infer.ReadLabels(m.Labels)
		if err != nil {
			a.log.Warn("labels not read; answers carry indexes only", "model", m.ID, "err", err)
		}
		a.labels[m.ID] = labels
	}
	calStages := tflite.Stages(cal.Stages)
	spec := tflite.ModelSpec{ID: m.ID, Path: path, Pinned: m.Pinned, KnownHeap: cal.HeapBytes,
		KnownSteady: cal.Stages.Steady, KnownSaved: calStages.Saved(),
		Interpreter: &tflite.Options{Threads: cal.Threads, Delegates: chosen}}
	if err := a.pool.Register(spec); err != nil {
		return fail(err)
	}
	a.specs[m.ID] = m
	return mr
}

// tryDelegate uses what the state knows about delegate spec for the model,
// or tries it: an attempt record goes to disk first, so a crash inside the
// delegate is found on the next start and the delegate is never tried again.
func (a *Agent) tryDelegate(m ModelConfig, digest string, spec tflite.DelegateSpec) DelegateTry {
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
	if look.Status == storage.Restored {
		try.State, try.Reason = rec.State, rec.Reason
		if rec.State != storage.Worked {
			a.log.Info("delegate skipped", "model", m.ID, "delegate", spec.Name, "state", rec.State, "reason", rec.Reason)
		}
		return try
	}
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
		a.event("delegate_failed", map[string]any{"model": m.ID, "delegate": spec.Name, "reason": attemptErr.Error()})
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

// needsAccelerator reports whether the model at path cannot run on the CPU
// alone (it was compiled for the Edge TPU).
func needsAccelerator(path string) bool {
	m, err := tflite.LoadModel(path)
	if err != nil {
		return false
	}
	defer m.Close()
	return m.NeedsEdgeTPU()
}
