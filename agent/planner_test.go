package agent_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

func chosenIDs(r agent.PlanResult) []string {
	out := []string{}
	for _, c := range r.Plan.Chosen {
		out = append(out, c.Model)
	}
	slices.Sort(out)
	return out
}

// For each power fixture the plan is what the documented policy says.
func TestPlanFollowsPolicyPerFixture(t *testing.T) {
	cases := []struct {
		fixture string
		mode    power.Mode
		chosen  []string // for a wake after start, sorted
	}{
		{"laptop-ac", power.ModeAll, []string{"lstm", "v1", "v2", "xor"}},
		{"rpi", power.ModeAll, []string{"lstm", "v1", "v2", "xor"}},
		{"laptop-battery", power.ModeTopK, []string{"lstm", "v1", "xor"}},
		{"ups-hat", power.ModeTopK, []string{"lstm", "v1", "xor"}},
		{"laptop-low", power.ModePinned, []string{"xor"}},
		{"laptop-critical", power.ModeNone, []string{}},
		{"hot", power.ModeDefer, []string{}},
	}
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			cfg := testConfig(t, planModels(t)...)
			cfg.Power.SysfsRoot = fixture(c.fixture)
			a := start(t, cfg, agent.Options{System: idleSystem})
			defer a.Close()
			// Demand history: lstm most, then v1; v2 none.
			now := time.Now()
			var ev []storage.UsageEvent
			for range 20 {
				ev = append(ev, storage.UsageEvent{Model: "lstm", At: now, N: 1})
			}
			for range 5 {
				ev = append(ev, storage.UsageEvent{Model: "v1", At: now, N: 1})
			}
			if err := a.Store().AddUsage(ev); err != nil {
				t.Fatal(err)
			}
			start := a.Report().Plan
			// At start the pinned model is always warm; the others follow the policy.
			if !slices.Contains(start.Warmed, "xor") {
				t.Fatalf("pinned model not warmed at start: %+v", start)
			}
			res, err := a.Wake(context.Background(), "test")
			if err != nil {
				t.Fatal(err)
			}
			if res.Plan.Allowance.Mode != c.mode || !slices.Equal(chosenIDs(res), c.chosen) {
				t.Fatalf("plan %s chosen %v, want %s %v; skipped %+v", res.Plan.Allowance.Mode, chosenIDs(res), c.mode, c.chosen, res.Plan.Skipped)
			}
			for _, s := range res.Plan.Skipped {
				if s.Reason == "" {
					t.Errorf("%s skipped without a reason", s.Model)
				}
			}
			// The pool's own counters: in the low and critical states no
			// unpinned model ever ran a warm-up invoke.
			if c.mode == power.ModePinned || c.mode == power.ModeNone || c.mode == power.ModeDefer {
				for id, n := range loadsOf(a) {
					if id != "xor" && n != 0 {
						t.Errorf("%s: %d warm-ups of unpinned %s", c.fixture, n, id)
					}
				}
			}
		})
	}
}

func evictAll(t *testing.T, a *agent.Agent) {
	t.Helper()
	for _, m := range a.Pool().Models() {
		if !m.Pinned {
			if err := a.Pool().Evict(m.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestWakeDuringPrewarmCancelsAndReplans(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	cfg := testConfig(t, planModels(t)...)
	cfg.Power.SysfsRoot = fixture("laptop-ac")
	g := newGate("v2")
	a := start(t, cfg, agent.Options{System: idleSystem, BeforePrewarm: g.hook})
	evictAll(t, a)
	g.armed.Store(true)

	first := make(chan agent.PlanResult, 1)
	go func() {
		r, err := a.Wake(context.Background(), "first")
		if err != nil {
			t.Error(err)
		}
		first <- r
	}()
	<-g.reached // the first plan is inside v2's warm-up
	g.armed.Store(false)
	second, err := a.Wake(context.Background(), "second")
	if err != nil {
		t.Fatal(err)
	}
	r1 := <-first
	if !r1.Cancelled || slices.Contains(r1.Warmed, "v2") {
		t.Fatalf("first plan not cancelled: %+v", r1)
	}
	if second.Cancelled || !slices.Contains(append(second.Warmed, second.Already...), "v2") {
		t.Fatalf("second plan: %+v", second)
	}
	if second.Energy.CPUSeconds <= 0 || second.Energy.JoulesEstimated <= 0 {
		t.Fatalf("plan energy not accounted: %+v", second.Energy)
	}
	s := a.Pool().Stats()
	if s.Leased != 0 || s.Interpreters != 4 || s.WarmModels != 4 {
		t.Fatalf("interpreters after replanning: %+v", s)
	}
	a.Close()
	waitGoroutines(t, goroutines)
}

type fakeClock struct {
	mu         sync.Mutex
	boot, mono time.Duration
}

func (c *fakeClock) tick(awake, asleep time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mono += awake
	c.boot += awake + asleep
}
func (c *fakeClock) Boottime() time.Duration  { c.mu.Lock(); defer c.mu.Unlock(); return c.boot }
func (c *fakeClock) Monotonic() time.Duration { c.mu.Lock(); defer c.mu.Unlock(); return c.mono }

func TestResumeFromSuspendEmitsOneWake(t *testing.T) {
	cfg := testConfig(t, planModels(t)[:2]...)
	cfg.Power.SysfsRoot = fixture("rpi")
	clock := &fakeClock{boot: time.Hour, mono: time.Hour}
	resume := newStepper(t, "resume")
	a := start(t, cfg, agent.Options{System: idleSystem, Clock: clock, Ticks: resume.ticks})
	defer a.Close()
	awake := func(n int) {
		for range n {
			clock.tick(5*time.Millisecond, 0)
			resume.step(1)
		}
	}
	awake(20)
	wakeBarrier(t, a)
	if n := wakeEvents(t, a, "resume"); n != 0 {
		t.Fatalf("%d resume wakes without a suspend", n)
	}
	clock.tick(time.Millisecond, 20*time.Minute) // the suspend
	resume.step(1)
	awake(40) // many more checks, awake
	wakeBarrier(t, a)
	if n := wakeEvents(t, a, "resume"); n != 1 {
		t.Fatalf("%d wake events for one resume", n)
	}
}

func TestTieredServingWhilePreciseWarms(t *testing.T) {
	models := planModels(t)[1:3] // v1 (fast), v2 (precise)
	cfg := testConfig(t, models...)
	cfg.Power.SysfsRoot = fixture("laptop-ac")
	cfg.Families = []agent.FamilyConfig{{ID: "classifier", Variants: []string{"v1", "v2"}}}
	g := newGate("v2")
	a := start(t, cfg, agent.Options{System: idleSystem, BeforePrewarm: g.hook})
	defer a.Close()
	evictAll(t, a)
	g.armed.Store(true)

	woke := make(chan agent.PlanResult, 1)
	go func() {
		r, _ := a.Wake(context.Background(), "test")
		woke <- r
	}()
	<-g.reached // v1 is warm (fast first); v2 is being warmed
	catBytes, err := os.ReadFile(tflitetest.Path(t, "cat.bmp"))
	if err != nil {
		t.Fatal(err)
	}
	ask := func() agent.InferReply {
		t.Helper()
		payload, _ := json.Marshal(map[string]any{"model": "classifier", "image": base64.StdEncoding.EncodeToString(catBytes), "top": 1})
		res, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", ID: "q", Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		r := res.(agent.InferReply)
		if r.Family != "classifier" || r.Top[0].Label != "Egyptian cat" {
			t.Fatalf("reply %+v", r)
		}
		return r
	}
	for range 3 {
		if r := ask(); r.Variant != "v1" || !r.Warm {
			t.Fatalf("during the precise warm-up: %+v", r)
		}
	}
	g.armed.Store(false)
	close(g.release)
	// The plan, or the background warm-up the family requests started,
	// warms the precise variant; either way it is warm now.
	if r := <-woke; r.Cancelled || !slices.Contains(append(r.Warmed, r.Already...), "v2") || !a.Pool().IsWarm("v2") {
		t.Fatalf("wake result %+v", r)
	}
	for range 3 {
		if r := ask(); r.Variant != "v2" {
			t.Fatalf("after the precise warm-up: %+v", r)
		}
	}
	var plan []string
	for _, c := range a.Report().Plan.Plan.Chosen {
		plan = append(plan, c.Model)
	}
	if strings.Join(plan, ",") != "v1,v2" {
		t.Fatalf("start plan order %v: the fast variant must warm first", plan)
	}
	// Requests to the family count as demand for its variants (the planner
	// and the schedule rank variants, never the family id).
	a.Close()
	st, _, err := storage.Open(cfg.StateDir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	usage, err := st.Usage()
	if err != nil {
		t.Fatal(err)
	}
	total := func(id string) (n float64) {
		for _, c := range usage[id].Counts {
			n += c
		}
		return n
	}
	if _, ok := usage["classifier"]; ok || total("v1") == 0 || total("v2") == 0 {
		t.Fatalf("usage recorded %+v, want the variants' and not the family id's", usage)
	}
}
