//go:build !race

package agent_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/power"
)

// The acceptance run of model updates: a client sends more than 50
// requests a second to one model id over a real mosquitto while its file
// is replaced 20 times — two real models with different answers on the
// client's image, alternating, and between them a corrupt, a truncated, a
// half-written, a wrong-shape and a custom-op file, and a touch with the
// same content. No request fails; no request is answered by a version
// replaced before it was sent; refused files leave the previous version
// serving; the bytes accounted stay within the budget; RSS is logged.
//
// The two models are mobilenet v1 0.25 and the MNIST LSTM (the image is
// scaled to either input: allow_signature_change). Both are cheap: on this
// 2-core machine mobilenet v2 takes 30–40 ms an invoke under load, so no
// agent could answer it 50 times a second, swap or no swap; v1 → v2 is
// covered by the parity test. The client sends a 160×160 PNG, as a camera
// client would. Not under -race (updatestorm_race_test.go): the detector
// slows the Go image code below the rate; every other update test runs
// under it, and make test runs this one in a second, plain go test.
func TestUpdatesUnderLoadOverMQTT(t *testing.T) {
	v1, v2 := readShared(t, "mobilenet_v1_0.25_128_quant.tflite"), readShared(t, "keras_lstm_mnist_ptq.tflite")
	xor, customOp := readShared(t, "xor_model.tflite"), readShared(t, "model_invoking_error.tflite")
	img := smallPNG(t, "grace_hopper.bmp", 160)
	broker := mqtttest.Start(t, mqtttest.Options{})
	path := filepath.Join(t.TempDir(), "cls.tflite")
	replaceFile(t, path, v1)
	cfg := testConfig(t, agent.ModelConfig{ID: "cls", Path: path, AllowSignatureChange: true})
	cfg.MQTT.Brokers, cfg.MQTT.Device = []string{broker.URL()}, "dev1"
	on := true
	cfg.Updates.Watch, cfg.Updates.Debounce = &on, 100*time.Millisecond
	cfg.Pool.Budget = 16 << 20 // both versions fit (1.3 MiB at most)
	cfg.Pool.Threads = 2
	// A machine busy with other work answers slower than 55/s for a while:
	// let requests queue rather than be shed with "busy" (the point here
	// is swaps, not the queue's size).
	cfg.MQTT.CommandQueue = 4096
	// Calibrating each new version would compete with the client for the
	// two cores; on a device it waits for a pause (idle_after).
	cfg.Calibration.IdleAfter = time.Hour
	a := startNoWait(t, cfg, agent.Options{}) // calibration waits for a pause that never comes
	defer a.Close()

	// The answers of each version on the client's image.
	answer := map[string]int{}
	answer["v1"] = top1(t, a, "cls", img)

	// Events arrive over MQTT (the outbox empties as they are delivered).
	evSub := broker.Subscribe(t, "ops", "edge/dev1/telemetry/events")
	var evMu sync.Mutex
	var evs []map[string]any
	evDone := make(chan struct{})
	defer close(evDone)
	go func() {
		for {
			select {
			case <-evDone:
				return
			case m := <-evSub.Chan():
				var e map[string]any
				if json.Unmarshal(m.Payload, &e) == nil {
					evMu.Lock()
					evs = append(evs, e)
					evMu.Unlock()
				}
			}
		}
	}()
	count := func(kind string) int {
		evMu.Lock()
		defer evMu.Unlock()
		n := 0
		for _, e := range evs {
			if e["event"] == kind {
				n++
			}
		}
		return n
	}
	waitCount := func(kind string, n int) map[string]any {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for count(kind) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d %s events within a minute, want %d", count(kind), kind, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		evMu.Lock()
		defer evMu.Unlock()
		for i := len(evs) - 1; i >= 0; i-- {
			if evs[i]["event"] == kind {
				return evs[i]
			}
		}
		return nil
	}

	// The client: a request every 18 ms (55/s), each reply checked. (On
	// this 2-core machine v2 takes 16–27 ms an invoke: 100/s is more than
	// it can answer, and the agent then says busy, as it should.)
	sub := broker.Subscribe(t, "client", "edge/dev1/reply/#")
	var mu sync.Mutex
	sentAt := map[string]time.Time{}
	type reply struct {
		id      string
		at      time.Time // when the request was sent
		got     time.Time // when its reply arrived
		ok      bool
		top     int
		errText string
	}
	var replies []reply
	stop, stopped := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(18 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("r%d", i)
			mu.Lock()
			sentAt[id] = time.Now()
			mu.Unlock()
			sub.PublishAsync("edge/dev1/cmd/infer/"+id+"/cls", img)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopped:
				return
			case m := <-sub.Chan():
				var r struct {
					OK     bool `json:"ok"`
					Result struct {
						Top []struct{ Index int } `json:"top"`
					} `json:"result"`
					Error *struct{ Code, Message string } `json:"error"`
				}
				if err := json.Unmarshal(m.Payload, &r); err != nil {
					continue
				}
				id := m.Topic[strings.LastIndex(m.Topic, "/")+1:]
				mu.Lock()
				rep := reply{id: id, at: sentAt[id], got: time.Now(), ok: r.OK}
				mu.Unlock()
				if r.OK && len(r.Result.Top) > 0 {
					rep.top = r.Result.Top[0].Index
				} else if r.Error != nil {
					rep.errText = r.Error.Code + ": " + r.Error.Message
				}
				mu.Lock()
				replies = append(replies, rep)
				mu.Unlock()
			}
		}
	}()
	time.Sleep(300 * time.Millisecond) // recent requests in the parity ring

	type step struct {
		name  string
		write func()
		want  string // the event it must cause: updated, rejected, or none
		ver   string // the version serving afterwards
	}
	halfWritten := func(b []byte) func() {
		return func() {
			// Written in place and left half done for longer than the
			// debounce, then completed: the half is refused, the whole taken.
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(b[:len(b)/2]); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Corrupt where the flatbuffer's structure is (root offset and the
	// tables after the identifier), not only in weights.
	corrupt := append([]byte{}, v2...)
	for i := range 64 {
		if i < 4 || i >= 8 {
			corrupt[i] ^= 0xA5
		}
	}
	var steps []step
	next := map[string]string{"v1": "v2", "v2": "v1"}
	bytesOf := map[string][]byte{"v1": v1, "v2": v2}
	bad := []step{
		{"truncated", func() { replaceFile(t, path, v2[:len(v2)*2/3]) }, "rejected", ""},
		{"wrong shape", func() { replaceFile(t, path, xor) }, "rejected", ""},
		{"custom op", func() { replaceFile(t, path, customOp) }, "rejected", ""},
		{"half-written", halfWritten(v2), "rejected", ""},
		{"touch, same content", nil, "none", ""},
	}
	ver := "v1"
	for i := 0; len(steps) < 20; i++ {
		nv := next[ver]
		b := bytesOf[nv]
		steps = append(steps, step{"update to " + nv, func() { replaceFile(t, path, b) }, "updated", nv})
		ver = nv
		if i < len(bad) {
			s := bad[i]
			s.ver = ver
			if s.name == "touch, same content" {
				s.write = func() { now := time.Now(); _ = os.Chtimes(path, now, now) }
			}
			steps = append(steps, s)
		}
	}
	steps = append(steps, step{"corrupt", func() { replaceFile(t, path, corrupt) }, "rejected", ver})

	type mark struct {
		at  time.Time
		ver string
	}
	marks := []mark{{time.Time{}, "v1"}} // when each version started serving
	rssBefore := power.ReadMemory("/").RSSBytes
	maxBytes := int64(0)
	for i, s := range steps {
		updated, rejected := count("model_updated"), count("model_update_rejected")
		if s.write != nil {
			s.write()
		}
		switch s.want {
		case "updated":
			ev := waitCount("model_updated", updated+1)
			t.Logf("step %d %s: took %v ms, parity %v", i, s.name, ev["took_ms"], ev["parity"])
			at, err := time.Parse(time.RFC3339Nano, ev["swapped_at"].(string))
			if err != nil {
				t.Fatal(err)
			}
			marks = append(marks, mark{at, s.ver})
			if s.ver == "v2" && answer["v2"] == 0 {
				answer["v2"] = top1(t, a, "cls", img)
			}
		case "rejected":
			ev := waitCount("model_update_rejected", rejected+1)
			t.Logf("step %d %s: rejected %v", i, s.name, ev["code"])
		default:
			time.Sleep(300 * time.Millisecond) // three debounces: nothing may happen
			if n := count("model_updated") + count("model_update_rejected"); n != updated+rejected {
				t.Fatalf("step %d %s caused an event", i, s.name)
			}
		}
		if s.name == "half-written" {
			// Complete the file: this version is the same as the serving one.
			replaceFile(t, path, bytesOf[s.ver])
		}
		maxBytes = max(maxBytes, a.Pool().Stats().PeakBytes)
		// An update costs a warm-up and replays: let the client's backlog
		// drain before the next one, as spaced-out deployments would.
		waitFor(t, "the backlog drains", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(sentAt)-len(replies) < 5
		})
	}
	close(stop)
	// Every request sent gets its reply.
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		done := len(replies) >= len(sentAt)
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stopped)
	wg.Wait()

	if answer["v1"] == answer["v2"] {
		t.Fatalf("v1 and v2 answer the same (%d): the test cannot tell them apart", answer["v1"])
	}
	mu.Lock()
	defer mu.Unlock()
	failed, late := len(sentAt)-len(replies), 0
	if failed > 0 {
		t.Errorf("%d of %d requests got no reply", failed, len(sentAt))
	}
	for _, r := range replies {
		if !r.ok {
			failed++
			t.Errorf("request %s failed: %s", r.id, r.errText)
			continue
		}
		// The version serving when the request was sent, and any that took
		// over before its reply arrived (a queued request is answered by
		// whichever serves when it runs): never one replaced before it was
		// sent. The marks are the agent's swap times (swapped_at).
		allowed := map[int]bool{}
		for _, m := range marks {
			switch {
			case !r.at.Before(m.at):
				clear(allowed)
				allowed[answer[m.ver]] = true
			case m.at.Before(r.got):
				allowed[answer[m.ver]] = true
			}
		}
		if len(allowed) > 0 && !allowed[r.top] {
			late++
			t.Errorf("request %s was answered by a version replaced before it was sent (%d)", r.id, r.top)
		}
	}
	first, last := replies[0].at, replies[len(replies)-1].at
	rate := float64(len(replies)) / last.Sub(first).Seconds()
	s := a.Pool().Stats()
	if s.PeakBytes > s.Budget || maxBytes > s.Budget {
		t.Errorf("accounted bytes peaked at %d, over the budget %d", s.PeakBytes, s.Budget)
	}
	if rate < 50 {
		t.Errorf("the client managed %.0f requests/s, want ≥ 50", rate)
	}
	m := power.ReadMemory("/")
	growth := m.RSSBytes - rssBefore
	if growth > s.Budget {
		t.Errorf("RSS grew %.1f MiB over the run, more than the %.1f MiB budget", float64(growth)/(1<<20), float64(s.Budget)/(1<<20))
	}
	t.Logf("%d requests at %.0f/s through %d file changes: %d failed, %d answered by a replaced version; peak accounted %.2f MiB of %.1f MiB budget; process RSS %.1f MiB (grew %.1f MiB over the run)",
		len(replies), rate, len(steps), failed, late, float64(s.PeakBytes)/(1<<20), float64(s.Budget)/(1<<20),
		float64(m.RSSBytes)/(1<<20), float64(growth)/(1<<20))
}
