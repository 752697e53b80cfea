package agent

import (
	"context"
	"reflect"
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
		if err := a.pool.SetBudget(int64(next.Pool.Budget)); err != nil {
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
// are prepared, vanished ones unregistered, changed ones prepared again;
// the rest are left alone, warm.
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
	for id := range a.specs {
		if _, ok := want[id]; !ok {
			if err := a.pool.Unregister(id); err == nil {
				res.Removed = append(res.Removed, id)
			}
			delete(a.specs, id)
		}
	}
	for _, m := range models {
		spec, known := a.specs[m.ID]
		switch {
		case known && reflect.DeepEqual(spec, m):
			res.Unchanged = append(res.Unchanged, m.ID)
			continue
		case known:
			a.pool.Unregister(m.ID)
			delete(a.specs, m.ID)
			res.Changed = append(res.Changed, m.ID)
		}
		if mr := a.prepare(m); mr.Error != nil {
			res.Failed = append(res.Failed, m.ID)
		} else if !known {
			res.Added = append(res.Added, m.ID)
		}
	}
	return nilSafe(res)
}

func nilSafe(r ReloadResult) ReloadResult {
	for _, s := range []*[]string{&r.Added, &r.Removed, &r.Changed, &r.Unchanged, &r.Failed, &r.NeedsRestart} {
		*s = nonNil(*s)
		sort.Strings(*s)
	}
	return r
}
