package agent

import (
	"context"
	"time"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/agent/update"
	"github.com/edge-agent/edge-agent/tflite"
)

// updateHost is the agent side of model updates (agent/update): the
// serving state of each model and the swap under the agent's locks.
type updateHost struct{ a *Agent }

// newUpdates returns the agent's update manager.
func newUpdates(a *Agent, cfg Config) *update.Manager {
	return update.New(update.Options{
		Log:  a.log,
		Host: updateHost{a},
		Pool: func() update.Pool { return a.pool },
		Store: func() update.Store {
			return a.store
		},
		Settings: func() update.Settings {
			c := a.config()
			return update.Settings{StateDir: c.StateDir, KeepPreviousBytes: int64(c.Updates.KeepPreviousBytes),
				RollbackWindow: c.Updates.RollbackWindow, AutoRollback: c.Updates.autoRollback(), MaxImagePixels: c.Infer.MaxImagePixels}
		},
		Facts:           func() tflite.DigestCache { return a.reg.facts },
		Inspect:         func(path string) (tflite.ModelInfo, error) { return a.reg.facts.inspect(path) },
		Decodes:         func() *infer.DecodeBudget { return a.mem.decodes },
		Now:             a.opts.Now,
		RunCtx:          func() context.Context { return a.run.ctx },
		Spawn:           a.run.spawn,
		Rewarm:          func(id string) { a.planner.warmInBackground(id) },
		Quiet:           func(ctx context.Context) error { return a.waitQuiet(ctx, time.Now()) },
		BeforeKeep:      a.opts.BeforeVersionKeep,
		ParityRing:      cfg.Updates.ParityRing,
		ParityRingBytes: int64(cfg.Updates.ParityRingBytes),
	})
}

// model is st as the updates see it.
func (h updateHost) model(st *modelState) update.Model {
	return update.Model{ID: st.cfg.ID, Digest: st.digest, Path: st.path, Servable: st.servable,
		Checks: update.Checks{AllowSignatureChange: st.cfg.AllowSignatureChange, GoldenInput: st.cfg.GoldenInput,
			GoldenTop1: st.cfg.GoldenTop1, MinAgreement: st.cfg.MinAgreement},
		State: st}
}

func (h updateHost) Current(id string) (update.Model, bool) {
	st, ok := h.a.reg.get(id)
	if !ok {
		return update.Model{}, false
	}
	return h.model(st), true
}

// Commit swaps the model's state. The lock order is the registry's: prep → mu: a
// preparation (prep) reads the model map; prep is held from the check
// that from still serves until the map says to serves, so no preparation
// sees the pool and the map disagree. swap calls the pool (no C call).
func (h updateHost) Commit(from, to update.Model, swap func() error) error {
	a := h.a
	old, _ := from.State.(*modelState)
	st, _ := to.State.(*modelState)
	a.reg.prep.Lock()
	defer a.reg.prep.Unlock()
	if !a.reg.current(old) {
		return update.ErrSuperseded
	}
	if err := swap(); err != nil {
		return err
	}
	a.setModel(st)
	a.calib.unsettle()
	a.mem.files.kickHugePages()
	return nil
}

func (h updateHost) Prepare(cur update.Model, path string) update.Model {
	a := h.a
	c, _ := cur.State.(*modelState)
	a.reg.prep.Lock()
	st := a.prep.registerFrom(c.cfg, path, false)
	a.reg.prep.Unlock()
	return h.model(st)
}

func (h updateHost) Spec(m update.Model) tflite.ModelSpec {
	st, _ := m.State.(*modelState)
	return h.a.prep.modelSpec(st)
}

func (h updateHost) Event(kind string, f map[string]any) { h.a.tel.event(kind, f) }

// Rollback restores model id's previous version, warm, and refuses the
// version it replaces from then on (until a new version is deployed).
func (a *Agent) Rollback(ctx context.Context, id, reason string) (update.Report, error) {
	return a.upd.Rollback(ctx, id, reason)
}
