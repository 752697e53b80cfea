package update

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/errcode"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// Model updates: a new version of a serving model (its file replaced) is
// staged beside the serving one under a staging id, warmed, checked
// (signature, golden answer, parity with recent requests) and promoted in
// one step, or rejected while the old one keeps serving.

// The kinds of a refused update.
var (
	// ErrSignatureChanged: the update's input or output tensors differ and
	// the model does not allow it (allow_signature_change).
	ErrSignatureChanged = errcode.New("update_signature_changed", "the update changes the model's input or output tensors")
	// ErrGoldenMismatch: the update answers golden_input with another class
	// than golden_top1.
	ErrGoldenMismatch = errcode.New("update_golden_mismatch", "the update answers the golden input differently")
	// ErrDisagrees: the update agrees with the serving version on recent
	// requests less often than min_agreement.
	ErrDisagrees = errcode.New("update_disagrees", "the update disagrees with the serving version on recent requests")
	// ErrFailsRequests: the update cannot answer recent requests the
	// serving version answered.
	ErrFailsRequests = errcode.New("update_fails_requests", "the update fails requests the serving version answers")
	// ErrNoPrevious: rollback without a kept previous version.
	ErrNoPrevious = errcode.New("no_previous_version", "no previous version is kept for this model")
)

// pendingUpdate is a version being staged for one model id.
type pendingUpdate struct {
	digest string
	cancel context.CancelFunc
}

// Report is what an update (or rollback) did: the model_updated
// event and the rollback reply.
type Report struct {
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

// IsStaging reports whether a pool id is a version being staged ("id@sha"):
// '@' is never in a model id.
func IsStaging(id string) bool { return strings.Contains(id, "@") }

// Start stages st, a new version of the serving old, in the background.
// A newer version of the same model supersedes one still being staged.
func (m *Manager) Start(old, st Model) {
	id := st.ID
	m.mu.Lock()
	if u, ok := m.updates[id]; ok {
		if u.digest == st.Digest {
			m.mu.Unlock()
			return
		}
		u.cancel()
	}
	ctx, cancel := context.WithCancel(m.o.RunCtx())
	u := &pendingUpdate{digest: st.Digest, cancel: cancel}
	m.updates[id] = u
	m.mu.Unlock()
	m.o.Spawn(ctx, func(ctx context.Context) {
		defer func() {
			m.mu.Lock()
			if m.updates[id] == u {
				delete(m.updates, id)
			}
			m.mu.Unlock()
			cancel()
		}()
		if _, err := m.apply(ctx, old, st, ""); err != nil && ctx.Err() == nil {
			m.log.Debug("update not applied", "model", id, "err", err)
		}
	})
}

// Cancel stops staging a version of id (its file went back to the
// serving content, or the model was removed).
func (m *Manager) Cancel(id string) {
	m.mu.Lock()
	if u, ok := m.updates[id]; ok {
		u.cancel()
		delete(m.updates, id)
	}
	m.mu.Unlock()
}

// Staging reports whether version digest of id is being staged.
func (m *Manager) Staging(id, digest string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.updates[id]
	return ok && u.digest == digest
}

// apply stages st in place of old and promotes it when its checks
// pass; a rollback (reason set) skips the checks. The old version serves
// throughout, or, when only one fits, its requests wait while the new one
// is checked alone (see stage.go); a request never fails for the
// swap, and every check runs whatever the room.
func (m *Manager) apply(ctx context.Context, old, st Model, rollback string) (Report, error) {
	if err := m.Settle(ctx, st.ID); err != nil {
		return Report{}, err
	}
	t0 := time.Now()
	id := st.ID
	rep := Report{Model: id, OldSHA256: old.Digest, NewSHA256: st.Digest, Checks: []string{}, Rollback: rollback != "", Reason: rollback}
	staged := id + "@" + st.Digest[:min(12, len(st.Digest))]
	spec := m.o.Host.Spec(st)
	spec.ID, spec.Pinned, spec.StagingOf = staged, false, id
	_ = m.pool().Unregister(staged) // a leftover of a superseded attempt
	if err := m.pool().Register(spec); err != nil {
		return rep, m.reject(old, st, err, "")
	}
	var s stage
	promoted := false
	defer func() {
		if !promoted {
			_ = m.pool().Unregister(staged)
			m.restoreServing(id, &s)
		}
	}()

	var swapped time.Time
	for attempt := 1; ; attempt++ {
		rep.Checks = rep.Checks[:0]
		load, err := m.stage(ctx, id, staged, &s)
		rep.Staged = s.how
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if err != nil {
			return rep, m.reject(old, st, err, s.how)
		}
		rep.Stages = load.Stages
		rep.WarmMs = ms(time.Since(t0))

		tc := time.Now()
		if rollback == "" {
			if err := m.check(ctx, old, st, staged, &rep); err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				return rep, m.reject(old, st, err, s.how)
			}
		}
		rep.CheckMs = ms(time.Since(tc))

		err = m.o.Host.Commit(old, st, func() error {
			if ctx.Err() != nil {
				return ErrSuperseded
			}
			var err error
			if swapped, err = m.promote(ctx, staged, id); err != nil {
				return err
			}
			if rollback == "" {
				m.guard(id, old.Digest, st.Digest) // from the first request it serves
			}
			return nil
		})
		if errors.Is(err, ErrSuperseded) {
			return rep, fmt.Errorf("update of %q superseded", id)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, tflite.ErrCold) || attempt == 2 {
			return rep, m.reject(old, st, err, s.how)
		}
		// Evicted between its checks and the swap (by the serving
		// version's own requests): warmed and checked again, never
		// swapped in blind.
		m.log.Info("the staged update lost its warm staging; checking it again", "model", id)
	}
	promoted = true

	m.recordVersions(id, func(v *storage.Versions) {
		v.Previous, v.Current = old.Digest, st.Digest
		v.Forgive(st.Digest)
		if rollback != "" {
			v.Reject(storage.Rejection{SHA256: old.Digest, Code: "rolled_back", Reason: rollback, At: m.o.Now()})
		}
	})
	m.pruneVersions(id, st.Digest, old.Digest)
	rep.TookMs = ms(time.Since(t0))
	if rollback != "" {
		m.log.Warn("model rolled back", "model", id, "from", old.Digest, "to", st.Digest, "reason", rollback, "staged", rep.Staged)
		m.event("model_rolled_back", map[string]any{"model": id, "from_sha256": old.Digest, "to_sha256": st.Digest,
			"reason": rollback, "staged": rep.Staged, "took_ms": rep.TookMs, "swapped_at": swapped.UTC().Format(time.RFC3339Nano)})
	} else {
		m.log.Info("model updated", "model", id, "old", old.Digest, "new", st.Digest, "staged", rep.Staged, "took_ms", rep.TookMs)
		m.event("model_updated", map[string]any{"model": id, "old_sha256": old.Digest, "new_sha256": st.Digest,
			"staged": rep.Staged, "stages": rep.Stages, "parity": rep.Parity, "checks": rep.Checks,
			"warm_ms": rep.WarmMs, "checks_ms": rep.CheckMs, "took_ms": rep.TookMs,
			"swapped_at": swapped.UTC().Format(time.RFC3339Nano)})
	}
	return rep, nil
}

// promote swaps the staged version in, retrying while a check's lease on
// it is still being released; it returns when the swap happened.
func (m *Manager) promote(ctx context.Context, staged, id string) (time.Time, error) {
	for {
		at, err := m.pool().Promote(staged, id)
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

// check validates the staged version st against the serving old:
// tensors, the golden answer, and parity on recent requests. Only the new
// version runs (parity compares with the answers old gave), so every check
// runs whether or not both fit.
func (m *Manager) check(ctx context.Context, old, st Model, staged string, rep *Report) error {
	oldInfo, err := m.o.Inspect(old.Path)
	if err != nil {
		// The old version's file is gone (served from its path, not kept):
		// nothing to compare with but the update itself.
		m.log.Warn("serving version not inspectable; update checked alone", "model", st.ID, "err", err)
	}
	newInfo, err := m.o.Inspect(st.Path)
	if err != nil {
		return err
	}
	sameSig := oldInfo.Path != "" && sameTensors(oldInfo.Inputs, newInfo.Inputs) && sameTensors(oldInfo.Outputs, newInfo.Outputs)
	if oldInfo.Path != "" && !sameSig {
		if !st.Checks.AllowSignatureChange {
			return fmt.Errorf("%w: inputs %v → %v, outputs %v → %v (allow_signature_change = true accepts it)", ErrSignatureChanged,
				shapes(oldInfo.Inputs), shapes(newInfo.Inputs), shapes(oldInfo.Outputs), shapes(newInfo.Outputs))
		}
		rep.Checks = append(rep.Checks, "signature changed (allowed)")
	} else {
		rep.Checks = append(rep.Checks, "signature")
	}
	if st.Checks.GoldenInput != "" && st.Checks.GoldenTop1 != nil {
		req, err := infer.ReadRequest(st.Checks.GoldenInput, m.settings().MaxImagePixels)
		if err != nil {
			return fmt.Errorf("golden_input: %w", err)
		}
		req.Top = 1
		res, err := RunOn(ctx, m.pool(), staged, req)
		if err != nil {
			return err
		}
		if len(res.Top) == 0 || res.Top[0].Index != *st.Checks.GoldenTop1 {
			got := -1
			if len(res.Top) > 0 {
				got = res.Top[0].Index
			}
			return fmt.Errorf("%w: class %d, want %d", ErrGoldenMismatch, got, *st.Checks.GoldenTop1)
		}
		rep.Checks = append(rep.Checks, "golden")
	}
	p := m.replayParity(ctx, st.ID, old.Digest, staged, rep.Staged == "beside")
	if p.NewFailed > 0 {
		return fmt.Errorf("%w: %d of the last %d requests", ErrFailsRequests, p.NewFailed, p.NewFailed+p.Replayed)
	}
	if p.Replayed > 0 {
		rep.Parity = &p
		rep.Checks = append(rep.Checks, "parity")
		if m := st.Checks.MinAgreement; m > 0 && p.Agreement < m {
			return fmt.Errorf("%w: top-1 agreement %.2f on %d recent requests is below min_agreement %.2f", ErrDisagrees, p.Agreement, p.Replayed, m)
		}
	}
	return ctx.Err()
}

// RunOn runs one request on the model registered as id.
func RunOn(ctx context.Context, pool Pool, id string, req infer.Request) (infer.Result, error) {
	l, err := pool.Acquire(ctx, id)
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

// Reject records that st, never staged (it failed to prepare), is
// refused, as reject does.
func (m *Manager) Reject(old, st Model, err error) error { return m.reject(old, st, err, "") }

// reject records that st is refused (so the same bytes are not tried
// on every rescan) and says so; old keeps serving. staged is where it was
// staged ("" when it was not).
func (m *Manager) reject(old, st Model, err error, staged string) error {
	id := st.ID
	code := tflite.Code(err)
	var coded interface{ Code() string }
	if errors.As(err, &coded) {
		code = coded.Code()
	}
	m.log.Error("model update rejected; the previous version keeps serving", "model", id, "sha256", st.Digest, "code", code, "err", err)
	ev := map[string]any{"model": id, "sha256": st.Digest, "code": code, "reason": err.Error()}
	if staged != "" {
		ev["staged"] = staged
	}
	m.event("model_update_rejected", ev)
	if st.Digest != "" {
		m.recordVersions(id, func(v *storage.Versions) {
			v.Reject(storage.Rejection{SHA256: st.Digest, Code: code, Reason: err.Error(), At: m.o.Now()})
		})
		if st.Digest != old.Digest {
			v, _ := m.store().Versions(id)
			m.pruneVersions(id, old.Digest, v.Previous)
		}
	}
	return err
}

// recordVersions changes model id's versions record; a failure is logged.
func (m *Manager) recordVersions(id string, fn func(*storage.Versions)) {
	if err := m.store().UpdateVersions(id, fn); err != nil {
		m.log.Error("model versions not stored", "model", id, "err", err)
	}
}

// Rollback restores model id's previous version, warm, and refuses the
// version it replaces from then on (until a new version is deployed).
func (m *Manager) Rollback(ctx context.Context, id, reason string) (Report, error) {
	m.Cancel(id)
	cur, ok := m.o.Host.Current(id)
	if !ok || !cur.Servable {
		return Report{}, &tflite.Error{Op: "rollback " + id, Kind: tflite.ErrUnknownModel}
	}
	if err := m.Settle(ctx, id); err != nil {
		return Report{}, err
	}
	v, err := m.store().Versions(id)
	if err != nil {
		return Report{}, err
	}
	if v.Previous == "" || v.Previous == cur.Digest {
		return Report{}, fmt.Errorf("rollback %q: %w", id, ErrNoPrevious)
	}
	st := m.o.Host.Prepare(cur, m.VersionFile(id, v.Previous))
	if !st.Servable || st.Digest != v.Previous {
		return Report{}, fmt.Errorf("rollback %q: %w: the kept copy is missing or damaged", id, ErrNoPrevious)
	}
	return m.apply(ctx, cur, st, reason)
}

// Settle hurries the start's keep of model id's serving version (its copy
// synced, the versions record naming it current) and waits for it. An
// update or rollback names that version previous; a rescan calls it
// before it keeps the bytes of an update, which the keep's prune (every
// version but the current and previous ones) would remove.
func (m *Manager) Settle(ctx context.Context, id string) error { return m.keeps.wait(ctx, id) }
