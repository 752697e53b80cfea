package agent

import "github.com/edge-agent/edge-agent/agent/plan"

// The plan types appear in the agent's API (Wake, Status, the startup
// report); these names keep them where callers know them.
type (
	// Plan is what a wake warms, and why.
	Plan = plan.Plan
	// PlanItem is one model in a plan: what warming it is worth and costs.
	PlanItem = plan.Item
	// PlanResult is what running a plan did.
	PlanResult = plan.Result
)

// planFamilies is the configured families as the plan sees them.
func planFamilies(fs []FamilyConfig) []plan.Family {
	out := make([]plan.Family, len(fs))
	for i, f := range fs {
		out[i] = plan.Family{ID: f.ID, Variants: f.Variants}
	}
	return out
}
