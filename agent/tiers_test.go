package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
)

// tierAgent serves family "classifier" (v1 fast, v2 precise) with v2's
// warm-ups held at the gate until the test releases them.
func tierAgent(t *testing.T, f agent.FamilyConfig) (*agent.Agent, *gate) {
	t.Helper()
	cfg := testConfig(t, planModels(t)[1:3]...)
	f.ID, f.Variants = "classifier", []string{"v1", "v2"}
	cfg.Families = []agent.FamilyConfig{f}
	g := newGate("v2")
	a := start(t, cfg, agent.Options{System: idleSystem, BeforePrewarm: g.hook})
	t.Cleanup(func() { _ = a.Close() })
	if err := a.Pool().Evict("v2"); err != nil {
		t.Fatal(err)
	}
	g.armed.Store(true)
	return a, g
}

func askFamily(t *testing.T, a *agent.Agent, img []byte) agent.InferReply {
	t.Helper()
	res, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", Binary: true, Model: "classifier", Payload: img})
	if err != nil {
		t.Fatal(err)
	}
	return res.(agent.InferReply)
}

// A fast answer below escalate_below waits for the precise variant; when
// that is not warm within escalate_wait, the fast answer is given and the
// reply says so.
func TestTierGuardEscalatesLowScoreFastAnswers(t *testing.T) {
	cat := readShared(t, "cat.bmp")
	t.Run("precise answers", func(t *testing.T) {
		a, g := tierAgent(t, agent.FamilyConfig{EscalateBelow: 0.999, EscalateWait: time.Minute})
		done := make(chan agent.InferReply, 1)
		go func() { done <- askFamily(t, a, cat) }()
		<-g.reached // the request escalated and started v2's warm-up
		g.armed.Store(false)
		close(g.release)
		r := <-done
		if r.Variant != "v2" || !strings.Contains(r.Escalated, "escalate_below") {
			t.Fatalf("reply %+v: want v2, escalated for the low score", r)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		a, g := tierAgent(t, agent.FamilyConfig{EscalateBelow: 0.999, EscalateWait: 50 * time.Millisecond})
		defer close(g.release)
		r := askFamily(t, a, cat)
		if r.Variant != "v1" || !strings.Contains(r.Escalated, "not ready within escalate_wait") {
			t.Fatalf("reply %+v: want v1's answer, saying the precise one was not ready", r)
		}
		s := a.Status().Metrics.Tiers["classifier"]
		if s.Escalated != 1 || s.TimedOut != 1 {
			t.Fatalf("tier stats %+v", s)
		}
	})
	t.Run("confident fast answers are not escalated", func(t *testing.T) {
		a, g := tierAgent(t, agent.FamilyConfig{EscalateBelow: 0.01})
		defer close(g.release)
		if r := askFamily(t, a, cat); r.Variant != "v1" || r.Escalated != "" {
			t.Fatalf("reply %+v", r)
		}
	})
}

// Fast answers are sampled and checked against the precise variant once it
// is warm: v1 and v2 agree on cat and bird, not on grace_hopper; the
// disagreement is recorded with the fast answer's score.
func TestTierSamplingMeasuresAgreement(t *testing.T) {
	all := 1.0
	a, g := tierAgent(t, agent.FamilyConfig{SampleFraction: &all})
	for _, n := range []string{"cat.bmp", "bird.bmp", "grace_hopper.bmp"} {
		if r := askFamily(t, a, readShared(t, n)); r.Variant != "v1" {
			t.Fatalf("%s while v2 is cold: %+v", n, r)
		}
	}
	if s := a.Status().Metrics.Tiers["classifier"]; s.Samples != 0 || s.Pending != 3 {
		t.Fatalf("before v2 is warm: %+v", s)
	}
	g.armed.Store(false)
	close(g.release)
	waitFor(t, "the samples are checked", func() bool { return a.Status().Metrics.Tiers["classifier"].Samples == 3 })
	s := a.Status().Metrics.Tiers["classifier"]
	disagreed := 0
	for _, n := range s.DisagreedScores {
		disagreed += n
	}
	if s.Agreed != 2 || disagreed != 1 || s.Pending != 0 {
		t.Fatalf("tier stats %+v: want 2 of 3 agreeing", s)
	}
	t.Logf("fast path: %+v", s)
}

// Once the fast path is known to disagree with the precise variant more
// often than min_fast_agreement allows, requests wait for the precise one.
func TestTierGuardEscalatesOnLowAgreement(t *testing.T) {
	all := 1.0
	a, g := tierAgent(t, agent.FamilyConfig{SampleFraction: &all, MinFastAgreement: 0.9, EscalateWait: time.Minute})
	g.armed.Store(false)
	close(g.release)
	grace := readShared(t, "grace_hopper.bmp") // v1 and v2 disagree on it
	evict := func() {                          // once the background warm-up a request started is done
		waitFor(t, "v2 can be evicted", func() bool { return a.Pool().Evict("v2") == nil })
	}
	for fast := 0; fast < 10; {
		evict() // the fast variant answers, unless a background warm-up beat the request
		r := askFamily(t, a, grace)
		if r.Escalated != "" {
			t.Fatalf("escalated before the agreement was known: %+v", r)
		}
		if r.Variant == "v1" {
			fast++
		}
	}
	if _, _, err := a.Pool().Prewarm(context.Background(), "v2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ten samples are checked", func() bool {
		s := a.Status().Metrics.Tiers["classifier"]
		if s.Pending > 0 && a.Pool().IsWarm("v2") {
			askFamily(t, a, grace) // a request to the warm precise variant checks what is pending
		}
		return s.Samples >= 10
	})
	evict()
	r := askFamily(t, a, grace)
	if r.Variant != "v2" || !strings.Contains(r.Escalated, "min_fast_agreement") {
		t.Fatalf("reply %+v: want v2, escalated for the fast path's agreement", r)
	}
}
