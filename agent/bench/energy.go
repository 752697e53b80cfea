package bench

import (
	"context"
	"path/filepath"

	"github.com/edge-agent/edge-agent/agent"
)

// Energy is the CPU time one wake spends prewarming, per policy.
type Energy struct {
	Models    int
	CPUSecond map[string]Dist // "AC", "battery 15%"
	Warmed    map[string]int
}

func energy(ctx context.Context, o Options, work string) (Energy, error) {
	var models []agent.ModelConfig
	for i, m := range servingModels {
		models = append(models, agent.ModelConfig{ID: id(i), Path: filepath.Join(o.Models, m), Pinned: i == 2})
	}
	out := Energy{Models: len(models), CPUSecond: map[string]Dist{}, Warmed: map[string]int{}}
	policies := []struct {
		name    string
		battery int
	}{{"AC", 0}, {"battery 15% (pinned only)", 15}}
	agents := map[string]*agent.Agent{}
	for _, p := range policies {
		a, err := startAgent(ctx, agentConfig(filepath.Join(work, "energy-"+p.name), fixtureRoot(work, p.battery), models...))
		if err != nil {
			return out, err
		}
		defer func() { _ = a.Close() }()
		agents[p.name] = a
	}
	samples := map[string][]float64{}
	for range o.Reps {
		for _, p := range policies {
			a := agents[p.name]
			for _, m := range a.Pool().Models() {
				_ = a.Pool().SetPinned(m.ID, false)
				_ = a.Pool().Evict(m.ID)
			}
			_ = a.Pool().SetPinned(id(2), true)
			res, err := a.Wake(ctx, "bench")
			if err != nil {
				return out, err
			}
			samples[p.name] = append(samples[p.name], res.Energy.CPUSeconds)
			out.Warmed[p.name] = len(res.Warmed)
		}
	}
	for k, v := range samples {
		out.CPUSecond[k] = dist(v)
	}
	return out, nil
}
