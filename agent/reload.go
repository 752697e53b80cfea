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
	res := a.syncModels()
	res.NeedsRestart = nonNil(restart)
	if len(res.Added)+len(res.Changed) > 0 {
		a.PostWake("reload")
	}
	return res, nil
}

// syncModels brings the pool in line with the configured models: new ones
// are registered (and queued for calibration), vanished ones unregistered,
// changed ones registered again; the rest are left alone, warm. Nothing
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
	known := make(map[string]ModelConfig, len(a.models))
	for id, st := range a.models {
		known[id] = st.cfg
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
		cfg, isKnown := known[m.ID]
		switch {
		case isKnown && reflect.DeepEqual(cfg, m):
			res.Unchanged = append(res.Unchanged, m.ID)
			continue
		case isKnown:
			a.pool.Unregister(m.ID)
			res.Changed = append(res.Changed, m.ID)
		}
		st := a.register(m)
		a.setModel(st)
		if st.failed != nil {
			res.Failed = append(res.Failed, m.ID)
		} else if !isKnown {
			res.Added = append(res.Added, m.ID)
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
