package agent

import "testing"

// TestCalibratorSettles: Settled closes only once the start's plan is done
// and nothing is queued or measured (a deferred queue counts as settled),
// and unsettle re-arms it. Fakes stand in for the agent's states.
func TestCalibratorSettles(t *testing.T) {
	reg := newRegistry()
	reg.set(&modelState{cfg: ModelConfig{ID: "m"}, queued: true})
	models := reg.models
	c := newCalibrator(calibratorDeps{reg: reg})

	c.settle(false)
	if closed(c.Settled()) {
		t.Fatal("settled before the start's plan is done")
	}
	c.startPlanDone()
	<-c.kick // startPlanDone kicks the calibrator
	c.settle(false)
	if closed(c.Settled()) {
		t.Fatal("settled with a model queued")
	}
	c.settle(true)
	if !closed(c.Settled()) {
		t.Fatal("not settled with the queue deferred by the policy")
	}
	c.unsettle()
	if closed(c.Settled()) {
		t.Fatal("unsettle did not re-arm Settled")
	}
	select {
	case <-c.kick:
	default:
		t.Fatal("unsettle did not kick the calibrator")
	}
	models["m"].queued = false
	models["m"].calibrating = true
	c.settle(true)
	if closed(c.Settled()) {
		t.Fatal("settled while a model is measured")
	}
	models["m"].calibrating = false
	c.settle(false)
	if !closed(c.Settled()) {
		t.Fatal("not settled with nothing left")
	}
}
