package agent

import (
	"context"
	"reflect"
	"slices"
	"sort"
)

// ReloadResult says what a reload changed.
type ReloadResult struct {
	Added     []string `json:"added"`
	Removed   []string `json:"removed"`
	Changed   []string `json:"changed"`   // reloaded: their path or settings changed
	Unchanged []string `json:"unchanged"` // stayed warm, untouched
	Failed    []string `json:"failed"`
	// NeedsRestart names settings that only take effect on restart.
	NeedsRestart []string `json:"needs_restart"`
}

// Reload applies next: budget, models, families, power policy, prewarm and
// log level at once; warm models whose configuration did not change stay
// warm. The state dir, MQTT and pool shape need a restart (reported).
func (a *Agent) Reload(ctx context.Context, next Config) (ReloadResult, error) {
	if err := next.Validate(); err != nil {
		return ReloadResult{}, err
	}
	old := a.config()
	var restart []string
	if next.StateDir != old.StateDir {
		restart = append(restart, "state_dir")
		next.StateDir = old.StateDir
	}
	if !reflect.DeepEqual(next.MQTT, old.MQTT) {
		restart = append(restart, "mqtt")
		next.MQTT = old.MQTT
	}
	if next.State != old.State {
		restart = append(restart, "state")
		next.State = old.State
	}
	if next.Pool.InterpretersPerModel != old.Pool.InterpretersPerModel || next.Pool.Threads != old.Pool.Threads ||
		next.pageIn() != old.pageIn() {
		restart = append(restart, "pool (interpreters_per_model, threads, page_in)")
	}
	a.cfg.Store(&next)
	if next.Pool.Budget != old.Pool.Budget {
		if err := a.pool.SetBudget(a.poolBudget()); err != nil {
			a.log.Warn("new budget smaller than what pinned models hold", "err", err)
		}
	}
	if a.retuneLoops() {
		a.log.Info("reload: keep-alive, schedule and resume loops restarted with the new settings")
	}
	res := a.syncModels()
	res.NeedsRestart = nonNil(restart)
	if len(res.Added)+len(res.Changed) > 0 {
		a.PostWake("reload")
	}
	return res, nil
}

// syncModels brings the pool in line with the configured models: new ones
// are registered (and queued for calibration), vanished ones unregistered,
// changed ones (configuration, or the file's content: a deployment tool
// renamed a new model over it) replaced in the pool with no moment in which
// the id is missing; an update that cannot be served is rejected and the
// previous version keeps serving. The rest are left alone, warm. Nothing
// here waits on a load or a calibration.
func (a *Agent) syncModels() ReloadResult {
	a.prepMu.Lock()
	defer a.prepMu.Unlock()
	res := ReloadResult{}
	models, err := resolveModels(*a.config(), a.log)
	if err != nil {
		a.log.Error("models not rescanned", "err", err)
		return nilSafe(res)
	}
	want := map[string]ModelConfig{}
	for _, m := range models {
		want[m.ID] = m
	}
	a.mapsMu.Lock()
	known := make(map[string]*modelState, len(a.models))
	for id, st := range a.models {
		known[id] = st
	}
	a.mapsMu.Unlock()
	for id := range known {
		if _, ok := want[id]; !ok {
			if err := a.pool.Unregister(id); err == nil {
				res.Removed = append(res.Removed, id)
			}
			a.removeModel(id)
		}
	}
	for _, m := range models {
		old, isKnown := known[m.ID]
		// A model that could not be served is tried again like a new one.
		isKnown = isKnown && old.servable
		if isKnown && reflect.DeepEqual(old.cfg, m) && !a.fileChanged(old) {
			res.Unchanged = append(res.Unchanged, m.ID)
			continue
		}
		st := a.register(m)
		switch {
		case isKnown && !st.servable:
			// A bad update (truncated, half-written, not a model, gone):
			// the version serving keeps serving.
			res.Failed = append(res.Failed, m.ID)
			a.log.Error("model update rejected; the previous version keeps serving", "model", m.ID, "code", st.failed.Code)
			a.event("model_update_rejected", map[string]any{"model": m.ID, "sha256": st.report.SHA256,
				"code": st.failed.Code, "reason": st.failed.Message})
			continue
		case isKnown:
			a.setModel(a.admitModel(st, true))
			res.Changed = append(res.Changed, m.ID)
			if old.digest != st.digest {
				a.event("model_updated", map[string]any{"model": m.ID, "old_sha256": old.digest, "new_sha256": st.digest})
			}
		default:
			a.setModel(a.admitModel(st, false))
			if st.servable {
				res.Added = append(res.Added, m.ID)
			}
		}
		if !st.servable {
			res.Failed = append(res.Failed, m.ID)
		}
	}
	if len(res.Added)+len(res.Changed) > 0 {
		a.unsettle()
	}
	return nilSafe(res)
}

// removeModel forgets a model that is no longer configured.
func (a *Agent) removeModel(id string) {
	a.mapsMu.Lock()
	delete(a.models, id)
	a.order = slices.DeleteFunc(a.order, func(s string) bool { return s == id })
	a.mapsMu.Unlock()
	a.statusChanged()
}

func nilSafe(r ReloadResult) ReloadResult {
	for _, s := range []*[]string{&r.Added, &r.Removed, &r.Changed, &r.Unchanged, &r.Failed, &r.NeedsRestart} {
		*s = nonNil(*s)
		sort.Strings(*s)
	}
	return r
}
