package agent

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent/calibrate"
	"github.com/edge-agent/edge-agent/agent/fleet"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/storage"
)

// A wrong heap is a disagreement whatever the times say: busy cores make a
// time disagreement doubtful, and must not hide the heap's.
func TestDisagreementHeapBeforeTime(t *testing.T) {
	var cal storage.Calibration
	cal.HeapBytes = 4 << 20
	cal.Stages.Steady = 10 * time.Millisecond
	for _, c := range []struct {
		name       string
		steady     time.Duration
		heap       int64
		want       string // "" or a substring of the reason
		timingOnly bool
	}{
		{"agrees", 10 * time.Millisecond, 4 << 20, "", false},
		{"slow only", 30 * time.Millisecond, 4 << 20, "steady invoke", true},
		{"wrong heap", 10 * time.Millisecond, 40 << 20, "heap", false},
		{"wrong heap, slow too", 30 * time.Millisecond, 40 << 20, "heap", false},
	} {
		why, timing := disagreement(cal, calibrate.SteadyTimes{Wall: c.steady}, c.heap, 0.5)
		if (c.want == "") != (why == "") || !strings.Contains(why, c.want) || timing != c.timingOnly {
			t.Errorf("%s: %q (timing %v), want %q (timing %v)", c.name, why, timing, c.want, c.timingOnly)
		}
	}
}

// Once connected, sharing offers the twins what this device measured before
// it shared (restored from its state), and only that: not a twin's record,
// not a failed or unfinished calibration, not one measured in this run
// (the calibrator publishes those itself).
func TestTwinsShareWhatWasRestored(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MQTT.Brokers = []string{"tcp://broker:1883"}
	cfg.Fleet.LookupWait = time.Millisecond
	key := func(model string) storage.Validity {
		return storage.Validity{Model: model, Runtime: "rt", Hardware: "hw", Options: "threads=auto"}
	}
	state := func(model string, status storage.Status, cal storage.Calibration) modelState {
		var st modelState
		st.cfg.ID = model
		cal.Validity = key(model)
		st.cal = cal
		st.report.Calibration.Status = status
		return st
	}
	states := []modelState{
		state("twin", storage.Restored, storage.Calibration{Threads: 2, Runs: 3, Source: storage.SourceFleet, From: "other"}),
		state("failed", storage.Restored, storage.Calibration{Failed: "model_invalid"}),
		state("crashed", storage.Restored, storage.Calibration{Pending: true}),
		state("restored", storage.Restored, storage.Calibration{Threads: 2, Runs: 3}),
		state("measured", storage.New, storage.Calibration{Threads: 2, Runs: 3}),
	}
	published := make(chan string, len(states))
	tw := newTwins(twinsDeps{log: slog.New(slog.DiscardHandler), config: func() *Config { return &cfg },
		event: func(string, map[string]any) {}, runtimeVersion: "rt", started: time.Now(), now: time.Now,
		rand: func() float64 { return 0 }, fingerprint: func() string { return "hw" },
		publish: func(_ context.Context, topic string, _ []byte) error {
			published <- topic
			return nil
		},
		models: func() []modelState { return states }})
	o := mqtt.Options{Watch: map[string]func(string, []byte){}}
	tw.options(&o)
	if !tw.member() || o.OnConnect == nil {
		t.Fatal("a device with a broker and [fleet] on is not a member")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tw.run(ctx)
	}()
	o.OnConnect()
	select {
	case topic := <-published:
		if want := fleet.Topic(cfg.MQTT.Prefix, key("restored")); topic != want {
			t.Errorf("published %s, want %s", topic, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing published after connecting")
	}
	cancel()
	<-done // the loop publishes what it queued in one pass
	close(published)
	for topic := range published {
		t.Errorf("also published %s", topic)
	}
}
