package agent

import (
	"context"
	"reflect"
	"sort"

	"github.com/edge-agent/edge-agent/tflite"
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
	if next.Updates.ParityRing != old.Updates.ParityRing || next.Updates.ParityRingBytes != old.Updates.ParityRingBytes {
		restart = append(restart, "updates (parity_ring, parity_ring_bytes)")
		next.Updates.ParityRing, next.Updates.ParityRingBytes = old.Updates.ParityRing, old.Updates.ParityRingBytes
	}
	if next.Pool.InterpretersPerModel != old.Pool.InterpretersPerModel || next.Pool.Threads != old.Pool.Threads ||
		next.pageIn() != old.pageIn() || next.Pool.Eviction != old.Pool.Eviction {
		restart = append(restart, "pool (interpreters_per_model, threads, page_in, eviction)")
	}
	a.cfg.Store(&next)
	if next.Pool.Budget != old.Pool.Budget {
		if err := a.pool.SetBudget(a.mem.poolBudget()); err != nil {
			a.log.Warn("new budget smaller than what pinned models hold", "err", err)
		}
	}
	if a.loops.retune() {
		a.log.Info("reload: keep-alive, schedule and resume loops restarted with the new settings")
	}
	res := a.syncModels()
	res.NeedsRestart = nonNil(restart)
	if len(res.Added)+len(res.Changed) > 0 {
		a.wakeWhenQuiet("reload")
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
	a.reg.prep.Lock()
	defer a.reg.prep.Unlock()
	a.reg.pending.drop() // the models not registered yet are registered here, as configured now
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
	known := a.reg.byID()
	for id := range known {
		if _, ok := want[id]; !ok {
			a.upd.Cancel(id)
			if err := a.pool.Unregister(id); err == nil {
				res.Removed = append(res.Removed, id)
			}
			a.removeModel(id)
			a.upd.Forget(id)
		}
	}
	for _, m := range models {
		old, isKnown := known[m.ID]
		// A model that could not be served is tried again like a new one.
		isKnown = isKnown && old.servable
		sameCfg := isKnown && reflect.DeepEqual(old.cfg, m)
		var d string
		if sameCfg {
			var err error
			d, err = a.fileDigest(m.Path)
			switch {
			case err == nil && d == old.digest:
				a.upd.Cancel(m.ID) // back to what serves (a touch, or a revert)
				res.Unchanged = append(res.Unchanged, m.ID)
				continue
			case err == nil && a.upd.Staging(m.ID, d):
				res.Changed = append(res.Changed, m.ID) // already on its way
				continue
			case err == nil && a.refused(m.ID, d):
				// Refused before (or rolled back): not tried again until
				// other bytes are deployed.
				res.Unchanged = append(res.Unchanged, m.ID)
				continue
			}
		}
		// A new model (or new settings) serves from its copy at once; the
		// copy's fsync and the versions record follow off the request's
		// path, as at a start (update.Manager.KeepLater). An update of the
		// same model is kept durably first: it is staged and checked.
		keepLater := !sameCfg && a.run.ctx != nil
		if sameCfg && a.run.ctx != nil {
			// New bytes for a model that serves: the keep of its serving
			// version (waiting for quiet) runs now, so its prune cannot
			// remove the bytes kept below.
			_ = a.upd.Settle(a.run.ctx, m.ID)
		}
		st := a.prep.registerFrom(m, m.Path, keepLater)
		switch {
		case isKnown && !st.servable:
			// A bad update (truncated, half-written, not a model, gone):
			// the version serving keeps serving.
			res.Failed = append(res.Failed, m.ID)
			if st.digest == "" {
				st.digest = d // recorded, so the same bytes are not tried again
			}
			h := updateHost{a}
			_ = a.upd.Reject(h.model(old), h.model(st), &modelFailure{id: m.ID, r: st.failed})
			continue
		case sameCfg && old.digest != st.digest && a.run.ctx != nil:
			// New content: staged beside the serving version, checked,
			// then swapped in (agent/update).
			h := updateHost{a}
			a.upd.Start(h.model(old), h.model(st))
			res.Changed = append(res.Changed, m.ID)
			continue
		case isKnown:
			a.setModel(a.prep.admitModel(st, true))
			res.Changed = append(res.Changed, m.ID)
		default:
			a.setModel(a.prep.admitModel(st, false))
			if st.servable {
				res.Added = append(res.Added, m.ID)
			}
		}
		if st.servable && st.keepLater {
			a.upd.KeepLater(st.cfg.ID, st.digest, st.source, st.cfg.Path)
		}
		if !st.servable {
			res.Failed = append(res.Failed, m.ID)
		}
	}
	if len(res.Added)+len(res.Changed) > 0 {
		a.calib.unsettle()
		a.mem.files.kickHugePages()
	}
	return nilSafe(res)
}

// removeModel forgets a model that is no longer configured.
func (a *Agent) removeModel(id string) {
	a.reg.remove(id)
	a.ready.statusChanged()
}

func nilSafe(r ReloadResult) ReloadResult {
	for _, s := range []*[]string{&r.Added, &r.Removed, &r.Changed, &r.Unchanged, &r.Failed, &r.NeedsRestart} {
		*s = nonNil(*s)
		sort.Strings(*s)
	}
	return r
}

// fileDigest is the digest of the file at path (cached by identity).
func (a *Agent) fileDigest(path string) (string, error) {
	d, _, err := tflite.Digest(path, a.reg.facts)
	return d, err
}

// refused reports whether version digest of model id was rejected (or
// rolled back) before.
func (a *Agent) refused(id, digest string) bool {
	v, err := a.store.Versions(id)
	if err != nil {
		return false
	}
	_, ok := v.RejectedAs(digest)
	return ok
}
