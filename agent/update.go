package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// Model updates: a new version of a serving model (its file replaced) is
// staged beside the serving one under a staging id, warmed, checked
// (signature, golden answer, parity with recent requests) and promoted in
// one step, or rejected while the old one keeps serving. See README
// "Model updates".

// The kinds of a refused update.
var (
	// ErrSignatureChanged: the update's input or output tensors differ and
	// the model does not allow it (allow_signature_change).
	ErrSignatureChanged = tflite.NewKind("update_signature_changed", "the update changes the model's input or output tensors")
	// ErrGoldenMismatch: the update answers golden_input with another class
	// than golden_top1.
	ErrGoldenMismatch = tflite.NewKind("update_golden_mismatch", "the update answers the golden input differently")
	// ErrDisagrees: the update agrees with the serving version on recent
	// requests less often than min_agreement.
	ErrDisagrees = tflite.NewKind("update_disagrees", "the update disagrees with the serving version on recent requests")
	// ErrFailsRequests: the update cannot answer recent requests the
	// serving version answered.
	ErrFailsRequests = tflite.NewKind("update_fails_requests", "the update fails requests the serving version answers")
	// ErrNoPrevious: rollback without a kept previous version.
	ErrNoPrevious = tflite.NewKind("no_previous_version", "no previous version is kept for this model")
)

// pendingUpdate is a version being staged for one model id.
type pendingUpdate struct {
	digest string
	cancel context.CancelFunc
}

// UpdateReport is what an update (or rollback) did: the model_updated
// event and the rollback reply.
type UpdateReport struct {
	Model     string `json:"model"`
	OldSHA256 string `json:"old_sha256"`
	NewSHA256 string `json:"new_sha256"`
	// Staged says where the new version was warmed and checked: "beside"
	// the serving one (other idle models giving up their room), "alone"
	// (only one fits: the serving one drained first, its requests waiting),
	// or "refused" (it does not fit even alone).
	Staged   string        `json:"staged"`
	Stages   tflite.Stages `json:"stages"` // the new version's warm-up
	Parity   *Parity       `json:"parity,omitempty"`
	Checks   []string      `json:"checks"`    // which checks ran and passed
	WarmMs   float64       `json:"warm_ms"`   // registering and warming the new version
	CheckMs  float64       `json:"checks_ms"` // the checks (signature, golden, parity replays)
	TookMs   float64       `json:"took_ms"`   // from staging to the swap
	Rollback bool          `json:"rollback,omitempty"`
	Reason   string        `json:"reason,omitempty"` // of a rollback
}

// isStaging reports whether a pool id is a version being staged ("id@sha"):
// '@' is never in a model id.
func isStaging(id string) bool { return strings.Contains(id, "@") }

// startUpdate stages st, a new version of the serving old, in the
// background. A newer version of the same model supersedes one still
// being staged.
func (a *Agent) startUpdate(old, st *modelState) {
	id := st.cfg.ID
	a.updMu.Lock()
	if u, ok := a.updates[id]; ok {
		if u.digest == st.digest {
			a.updMu.Unlock()
			return
		}
		u.cancel()
	}
	ctx, cancel := context.WithCancel(a.runCtx)
	u := &pendingUpdate{digest: st.digest, cancel: cancel}
	a.updates[id] = u
	a.updMu.Unlock()
	a.spawn(ctx, func(ctx context.Context) {
		defer func() {
			a.updMu.Lock()
			if a.updates[id] == u {
				delete(a.updates, id)
			}
			a.updMu.Unlock()
			cancel()
		}()
		if _, err := a.applyUpdate(ctx, old, st, ""); err != nil && ctx.Err() == nil {
			a.log.Debug("update not applied", "model", id, "err", err)
		}
	})
}

// cancelUpdate stops staging a version of id (its file went back to the
// serving content, or the model was removed).
func (a *Agent) cancelUpdate(id string) {
	a.updMu.Lock()
	if u, ok := a.updates[id]; ok {
		u.cancel()
		delete(a.updates, id)
	}
	a.updMu.Unlock()
}

// staging reports whether version digest of id is being staged.
func (a *Agent) staging(id, digest string) bool {
	a.updMu.Lock()
	defer a.updMu.Unlock()
	u, ok := a.updates[id]
	return ok && u.digest == digest
}

// applyUpdate stages st in place of old and promotes it when its checks
// pass; a rollback (reason set) skips the checks. The old version serves
// throughout, or, when only one fits, its requests wait while the new one
// is checked alone (see updatestage.go); a request never fails for the
// swap, and every check runs whatever the room.
func (a *Agent) applyUpdate(ctx context.Context, old, st *modelState, rollback string) (UpdateReport, error) {
	// The serving version's record and copy first (a start keeps them
	// in the background): this update names it as the previous version.
	if err := a.versions.wait(ctx, st.cfg.ID); err != nil {
		return UpdateReport{}, err
	}
	t0 := time.Now()
	id := st.cfg.ID
	rep := UpdateReport{Model: id, OldSHA256: old.digest, NewSHA256: st.digest, Checks: []string{}, Rollback: rollback != "", Reason: rollback}
	staged := id + "@" + st.digest[:min(12, len(st.digest))]
	spec := a.modelSpec(st)
	spec.ID, spec.Pinned, spec.StagingOf = staged, false, id
	_ = a.pool.Unregister(staged) // a leftover of a superseded attempt
	if err := a.pool.Register(spec); err != nil {
		return rep, a.rejectUpdate(old, st, err, "")
	}
	var s stage
	promoted := false
	defer func() {
		if !promoted {
			_ = a.pool.Unregister(staged)
			a.restoreServing(id, &s)
		}
	}()

	var swapped time.Time
	for attempt := 1; ; attempt++ {
		rep.Checks = rep.Checks[:0]
		load, err := a.stageUpdate(ctx, id, staged, &s)
		rep.Staged = s.how
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if err != nil {
			return rep, a.rejectUpdate(old, st, err, s.how)
		}
		rep.Stages = load.Stages
		rep.WarmMs = ms(time.Since(t0))

		tc := time.Now()
		if rollback == "" {
			if err := a.checkUpdate(ctx, old, st, staged, &rep); err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				return rep, a.rejectUpdate(old, st, err, s.how)
			}
		}
		rep.CheckMs = ms(time.Since(tc))

		a.prepMu.Lock()
		a.mapsMu.Lock()
		current := a.models[id] == old
		a.mapsMu.Unlock()
		if !current || ctx.Err() != nil {
			a.prepMu.Unlock()
			return rep, fmt.Errorf("update of %q superseded", id)
		}
		swapped, err = a.promote(ctx, staged, id)
		if err == nil {
			break // prepMu held until the model map says so too
		}
		a.prepMu.Unlock()
		if !errors.Is(err, tflite.ErrCold) || attempt == 2 {
			return rep, a.rejectUpdate(old, st, err, s.how)
		}
		// Evicted between its checks and the swap (by the serving
		// version's own requests): warmed and checked again, never
		// swapped in blind.
		a.log.Info("the staged update lost its warm staging; checking it again", "model", id)
	}
	promoted = true
	if rollback == "" {
		a.guardUpdate(id, old.digest, st.digest) // from the first request it serves
	}
	a.setModel(st)
	a.unsettle()
	a.prepMu.Unlock()

	a.recordVersions(id, func(v *storage.Versions) {
		v.Previous, v.Current = old.digest, st.digest
		v.Forgive(st.digest)
		if rollback != "" {
			v.Reject(storage.Rejection{SHA256: old.digest, Code: "rolled_back", Reason: rollback, At: a.opts.Now()})
		}
	})
	a.pruneVersions(id, st.digest, old.digest)
	rep.TookMs = ms(time.Since(t0))
	if rollback != "" {
		a.log.Warn("model rolled back", "model", id, "from", old.digest, "to", st.digest, "reason", rollback, "staged", rep.Staged)
		a.event("model_rolled_back", map[string]any{"model": id, "from_sha256": old.digest, "to_sha256": st.digest,
			"reason": rollback, "staged": rep.Staged, "took_ms": rep.TookMs, "swapped_at": swapped.UTC().Format(time.RFC3339Nano)})
	} else {
		a.log.Info("model updated", "model", id, "old", old.digest, "new", st.digest, "staged", rep.Staged, "took_ms", rep.TookMs)
		a.event("model_updated", map[string]any{"model": id, "old_sha256": old.digest, "new_sha256": st.digest,
			"staged": rep.Staged, "stages": rep.Stages, "parity": rep.Parity, "checks": rep.Checks,
			"warm_ms": rep.WarmMs, "checks_ms": rep.CheckMs, "took_ms": rep.TookMs,
			"swapped_at": swapped.UTC().Format(time.RFC3339Nano)})
	}
	return rep, nil
}

// promote swaps the staged version in, retrying while a check's lease on
// it is still being released; it returns when the swap happened.
func (a *Agent) promote(ctx context.Context, staged, id string) (time.Time, error) {
	for {
		at, err := a.pool.Promote(staged, id)
		if !errors.Is(err, tflite.ErrBusy) {
			return at, err
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// checkUpdate validates the staged version st against the serving old:
// tensors, the golden answer, and parity on recent requests. Only the new
// version runs (parity compares with the answers old gave), so every check
// runs whether or not both fit.
func (a *Agent) checkUpdate(ctx context.Context, old, st *modelState, staged string, rep *UpdateReport) error {
	oldInfo, err := tflite.Inspect(old.path, digestCache{a.store})
	if err != nil {
		// The old version's file is gone (served from its path, not kept):
		// nothing to compare with but the update itself.
		a.log.Warn("serving version not inspectable; update checked alone", "model", st.cfg.ID, "err", err)
	}
	newInfo, err := tflite.Inspect(st.path, digestCache{a.store})
	if err != nil {
		return err
	}
	sameSig := oldInfo.Path != "" && sameTensors(oldInfo.Inputs, newInfo.Inputs) && sameTensors(oldInfo.Outputs, newInfo.Outputs)
	if oldInfo.Path != "" && !sameSig {
		if !st.cfg.AllowSignatureChange {
			return fmt.Errorf("%w: inputs %v → %v, outputs %v → %v (allow_signature_change = true accepts it)", ErrSignatureChanged,
				shapes(oldInfo.Inputs), shapes(newInfo.Inputs), shapes(oldInfo.Outputs), shapes(newInfo.Outputs))
		}
		rep.Checks = append(rep.Checks, "signature changed (allowed)")
	} else {
		rep.Checks = append(rep.Checks, "signature")
	}
	if st.cfg.GoldenInput != "" && st.cfg.GoldenTop1 != nil {
		req, err := infer.ReadRequest(st.cfg.GoldenInput, a.config().Infer.MaxImagePixels)
		if err != nil {
			return fmt.Errorf("golden_input: %w", err)
		}
		req.Top = 1
		res, err := a.runOn(ctx, staged, req)
		if err != nil {
			return err
		}
		if len(res.Top) == 0 || res.Top[0].Index != *st.cfg.GoldenTop1 {
			got := -1
			if len(res.Top) > 0 {
				got = res.Top[0].Index
			}
			return fmt.Errorf("%w: class %d, want %d", ErrGoldenMismatch, got, *st.cfg.GoldenTop1)
		}
		rep.Checks = append(rep.Checks, "golden")
	}
	p := a.replayParity(ctx, st.cfg.ID, old.digest, staged, rep.Staged == "beside")
	if p.NewFailed > 0 {
		return fmt.Errorf("%w: %d of the last %d requests", ErrFailsRequests, p.NewFailed, p.NewFailed+p.Replayed)
	}
	if p.Replayed > 0 {
		rep.Parity = &p
		rep.Checks = append(rep.Checks, "parity")
		if m := st.cfg.MinAgreement; m > 0 && p.Agreement < m {
			return fmt.Errorf("%w: top-1 agreement %.2f on %d recent requests is below min_agreement %.2f", ErrDisagrees, p.Agreement, p.Replayed, m)
		}
	}
	return ctx.Err()
}

// runOn runs one request on the model registered as id.
func (a *Agent) runOn(ctx context.Context, id string, req infer.Request) (infer.Result, error) {
	l, err := a.pool.Acquire(ctx, id)
	if err != nil {
		return infer.Result{}, err
	}
	defer l.Release()
	return infer.Run(l, req)
}

func sameTensors(a, b []tflite.TensorInfo) bool {
	return slices.EqualFunc(a, b, func(x, y tflite.TensorInfo) bool {
		return x.Type == y.Type && slices.Equal(x.Shape, y.Shape)
	})
}

func shapes(ts []tflite.TensorInfo) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = fmt.Sprintf("%s%v", t.Type, t.Shape)
	}
	return out
}

// rejectUpdate records that st is refused (so the same bytes are not tried
// on every rescan) and says so; old keeps serving. staged is where it was
// staged ("" when it was not).
func (a *Agent) rejectUpdate(old, st *modelState, err error, staged string) error {
	id := st.cfg.ID
	code := tflite.Code(err)
	var coded interface{ Code() string }
	if errors.As(err, &coded) {
		code = coded.Code()
	}
	a.log.Error("model update rejected; the previous version keeps serving", "model", id, "sha256", st.digest, "code", code, "err", err)
	ev := map[string]any{"model": id, "sha256": st.digest, "code": code, "reason": err.Error()}
	if staged != "" {
		ev["staged"] = staged
	}
	a.event("model_update_rejected", ev)
	if st.digest != "" {
		a.recordVersions(id, func(v *storage.Versions) {
			v.Reject(storage.Rejection{SHA256: st.digest, Code: code, Reason: err.Error(), At: a.opts.Now()})
		})
		if st.digest != old.digest {
			v, _ := a.store.Versions(id)
			a.pruneVersions(id, old.digest, v.Previous)
		}
	}
	return err
}

// recordVersions changes model id's versions record; a failure is logged.
func (a *Agent) recordVersions(id string, fn func(*storage.Versions)) {
	if err := a.store.UpdateVersions(id, fn); err != nil {
		a.log.Error("model versions not stored", "model", id, "err", err)
	}
}

// Rollback restores model id's previous version, warm, and refuses the
// version it replaces from then on (until a new version is deployed).
func (a *Agent) Rollback(ctx context.Context, id, reason string) (UpdateReport, error) {
	a.cancelUpdate(id)
	a.mapsMu.Lock()
	cur, ok := a.models[id]
	a.mapsMu.Unlock()
	if !ok || !cur.servable {
		return UpdateReport{}, &tflite.Error{Op: "rollback " + id, Kind: tflite.ErrUnknownModel}
	}
	if err := a.versions.wait(ctx, id); err != nil {
		return UpdateReport{}, err
	}
	v, err := a.store.Versions(id)
	if err != nil {
		return UpdateReport{}, err
	}
	if v.Previous == "" || v.Previous == cur.digest {
		return UpdateReport{}, fmt.Errorf("rollback %q: %w", id, ErrNoPrevious)
	}
	a.prepMu.Lock()
	st := a.registerFrom(cur.cfg, a.versionFile(id, v.Previous), false)
	a.prepMu.Unlock()
	if !st.servable || st.digest != v.Previous {
		return UpdateReport{}, fmt.Errorf("rollback %q: %w: the kept copy is missing or damaged", id, ErrNoPrevious)
	}
	return a.applyUpdate(ctx, cur, st, reason)
}
