package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// firstStartCases are shared models with an image and the MANIFEST's top-1.
var firstStartCases = []struct {
	id, model, image string
	top1             int
}{
	{"v1", "mobilenet_v1_0.25_128_quant.tflite", "cat.bmp", 286},
	{"v2", "mobilenet_v2_1.0_224_quant.tflite", "cat.bmp", 286},
	{"bird", "mobilenet_v2_1.0_224_inat_bird_quant.tflite", "bird.bmp", 659},
	{"lstm", "keras_lstm_mnist_ptq.tflite", "mnist_nine.bmp", 9},
}

// A fresh device: a client that asks every model the moment the retained
// status says online gets a correct answer from each, none unknown_model,
// none late, although nothing is calibrated yet.
func TestFirstStartServesEveryModelAtOnce(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	var models []agent.ModelConfig
	for _, c := range firstStartCases {
		models = append(models, agent.ModelConfig{ID: c.id, Path: tflitetest.Path(t, c.model)})
	}
	cfg := mqttConfig(t, b.URL(), models...)
	client := b.Subscribe(t, "client", "edge/dev1/#")

	started := make(chan *agent.Agent, 1)
	go func() { started <- startNoWait(t, cfg, agent.Options{}) }()
	var online map[string]any
	for online == nil {
		m := client.Next(t, 30*time.Second)
		if m.Topic == "edge/dev1/status" && strings.Contains(string(m.Payload), `"online"`) {
			json.Unmarshal(m.Payload, &online)
		}
	}
	// The retained status already lists every model as servable.
	ready := online["models"].(map[string]any)
	for _, c := range firstStartCases {
		r, ok := ready[c.id].(map[string]any)
		if !ok || r["state"] == agent.StateFailed {
			t.Fatalf("%s in the online status: %v", c.id, ready[c.id])
		}
	}
	for _, c := range firstStartCases {
		img, err := os.ReadFile(tflitetest.Path(t, c.image))
		if err != nil {
			t.Fatal(err)
		}
		client.PublishAsync(fmt.Sprintf("edge/dev1/cmd/infer/%s/%s", c.id, c.id), img)
	}
	got := map[string]bool{}
	deadline := time.After(60 * time.Second)
	for len(got) < len(firstStartCases) {
		select {
		case m := <-client.Chan():
			id, ok := strings.CutPrefix(m.Topic, "edge/dev1/reply/")
			if !ok {
				continue
			}
			var r struct {
				OK     bool             `json:"ok"`
				Error  *mqtt.ReplyError `json:"error"`
				Result agent.InferReply `json:"result"`
			}
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				t.Fatal(err)
			}
			if !r.OK {
				t.Fatalf("%s: %+v", id, r.Error)
			}
			for _, c := range firstStartCases {
				if c.id == id && (len(r.Result.Top) == 0 || r.Result.Top[0].Index != c.top1) {
					t.Fatalf("%s answered %+v, want top-1 %d", id, r.Result.Top, c.top1)
				}
			}
			got[id] = true
		case <-deadline:
			t.Fatalf("answers for %v only", got)
		}
	}
	a := <-started
	defer a.Close()
	<-a.Settled()
}

// Requests that arrive while the calibrator measures a model are answered;
// what it measured is stored and the next start restores it.
func TestRequestsAnsweredWhileCalibrating(t *testing.T) {
	cfg := testConfig(t, agent.ModelConfig{ID: "v2", Path: tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite")},
		agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	cfg.Calibration.IdleAfter = 0
	held := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	a := startNoWait(t, cfg, agent.Options{BeforeCalibrate: func(ctx context.Context, model string) {
		if model != "v2" {
			return
		}
		once.Do(func() { close(held) })
		select {
		case <-release:
		case <-ctx.Done():
		}
	}})
	defer a.Close()
	select {
	case <-held:
	case <-time.After(time.Minute):
		t.Fatal("calibrator never reached v2")
	}
	if r := a.Status().Readiness["v2"]; r.Calibration != "calibrating" || r.State == agent.StateFailed {
		t.Fatalf("v2 readiness while calibrating: %+v", r)
	}
	for i := range 20 {
		in := float32Input(float32(i%2), 1)
		if _, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", Binary: true, Model: "xor", ID: "x", Payload: in}); err != nil {
			t.Fatalf("xor request %d during calibration: %v", i, err)
		}
		if _, err := a.Command(context.Background(), mqtt.Command{Verb: "prewarm", Payload: []byte(`{"model":"v2"}`)}); err != nil {
			t.Fatalf("v2 during its calibration: %v", err)
		}
	}
	close(release)
	<-a.Settled()
	rep := byID(t, a.Report(), "v2")
	if rep.Calibrated == nil || rep.CalibrationTime <= 0 || rep.Calibration.Status != storage.New {
		t.Fatalf("v2 after calibration: %+v", rep)
	}
	if r := a.Status().Readiness["v2"]; r.Calibration != "measured" || r.State != agent.StateWarm {
		t.Fatalf("v2 readiness after calibration: %+v", r)
	}
	a.Close()
	b := start(t, cfg, agent.Options{})
	defer b.Close()
	if m := byID(t, b.Report(), "v2"); m.Calibration.Status != storage.Restored || m.Threads != rep.Threads {
		t.Fatalf("restart: %+v", m)
	}
	if r := b.Status().Readiness["v2"]; r.Calibration != "restored" {
		t.Fatalf("v2 readiness after restart: %+v", r)
	}
}

// Calibration loads count against the budget: with two warm models that
// fit the budget but leave no room for a calibration load beside them,
// calibrating evicts instead of exceeding the budget.
func TestCalibrationCountsAgainstTheBudget(t *testing.T) {
	v2 := agent.ModelConfig{ID: "v2", Path: tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite")}
	v1 := agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")}
	// The two models' footprints, measured warm on a pool of their own.
	probe := start(t, testConfig(t, v2, v1), agent.Options{})
	var both int64
	for _, m := range probe.Pool().Models() {
		both += m.Bytes
	}
	probe.Close()

	cfg := testConfig(t, v2, v1)
	cfg.Pool.Budget = agent.ByteSize(both + both/10)
	cfg.Calibration.IdleAfter = 0
	gate := make(chan struct{})
	a := startNoWait(t, cfg, agent.Options{BeforeCalibrate: func(ctx context.Context, model string) {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}})
	defer a.Close()
	ctx := context.Background()
	for _, id := range []string{"v2", "v1"} {
		if _, err := a.Command(ctx, mqtt.Command{Verb: "prewarm", Payload: []byte(`{"model":"` + id + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if s := a.Pool().Stats(); s.WarmModels != 2 || s.Evictions != 0 {
		t.Fatalf("both models should fit the budget: %+v", s)
	}
	close(gate)
	<-a.Settled()
	s := a.Pool().Stats()
	t.Logf("budget %d, peak accounted %d, evictions %d", s.Budget, s.PeakBytes, s.Evictions)
	if s.PeakBytes > s.Budget || s.Evictions == 0 || s.Reserved != 0 {
		t.Fatalf("calibration beside two warm models: %+v", s)
	}
	for _, id := range []string{"v1", "v2"} {
		if m := byID(t, a.Report(), id); m.Calibrated == nil {
			t.Fatalf("%s not calibrated: %+v", id, m)
		}
	}
}

// A model that cannot run is reported with its code, answers requests
// with that code (never unknown_model), and does not hold the others up;
// its failed calibration is stored and not repeated on the next start.
func TestBadModelsReportedWhileOthersServe(t *testing.T) {
	dir := t.TempDir()
	orig, err := os.ReadFile(tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	trunc := filepath.Join(dir, "trunc.tflite")
	os.WriteFile(trunc, orig[:len(orig)/2], 0o644)
	cfg := testConfig(t,
		agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")},
		agent.ModelConfig{ID: "customop", Path: tflitetest.Path(t, "model_invoking_error.tflite")},
		agent.ModelConfig{ID: "trunc", Path: trunc})
	for run := range 2 {
		a := start(t, cfg, agent.Options{})
		ctx := context.Background()
		if _, err := a.Command(ctx, mqtt.Command{Verb: "infer", Binary: true, Model: "xor", ID: "x", Payload: float32Input(0, 1)}); err != nil {
			t.Fatalf("run %d: xor: %v", run, err)
		}
		for id, code := range map[string]string{"trunc": "model_truncated", "customop": "model_unresolved_op"} {
			_, err := a.Command(ctx, mqtt.Command{Verb: "infer", Binary: true, Model: id, ID: "x", Payload: []byte{1, 2, 3}})
			if got := mqtt.CodeOf(err); got != code {
				t.Fatalf("run %d: %s answered %v (%s), want %s", run, id, err, got, code)
			}
			if r := a.Status().Readiness[id]; r.State != agent.StateFailed || r.Code != code {
				t.Fatalf("run %d: %s readiness %+v", run, id, r)
			}
		}
		m := byID(t, a.Report(), "customop")
		wantStatus := storage.New
		if run == 1 {
			wantStatus = storage.Restored // the failure, not measured again
		}
		if m.Calibration.Status != wantStatus || m.CalibrationTime != 0 || m.Error == nil {
			t.Fatalf("run %d: customop %+v", run, m)
		}
		a.Close()
	}
}

// A calibration that kills the process is found on the next start and not
// tried again for the same model, runtime and board.
func TestCalibrationCrashNotRetried(t *testing.T) {
	dir := t.TempDir()
	cfgPath := runConfig(t, dir, "",
		agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite"), Pinned: true},
		agent.ModelConfig{ID: "crasher", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")})
	child := cliCmd(t)
	child.Env = append(os.Environ(), "EDGE_AGENT_TEST_CRASH_CALIBRATION="+cfgPath)
	err := child.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want killed inside the calibration", err)
	}
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	if r := a.Status().Readiness["crasher"]; r.Code != "calibration_crashed" {
		t.Fatalf("crasher readiness %+v", r)
	}
	if m := byID(t, a.Report(), "crasher"); m.Error == nil || m.Error.Code != "calibration_crashed" || m.CalibrationTime != 0 {
		t.Fatalf("crasher %+v", m)
	}
	if r := a.Status().Readiness["xor"]; r.State != agent.StateWarm || r.Calibration != "restored" {
		t.Fatalf("xor readiness %+v", r)
	}
}

// childCrashCalibration starts an agent whose calibration of "crasher"
// kills the process, as a crashing kernel would.
func childCrashCalibration(cfgPath string) int {
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil {
		fmt.Println("config:", err)
		return 1
	}
	a := agent.New(cfg, quietLog(), agent.Options{BeforeCalibrate: func(_ context.Context, model string) {
		if model == "crasher" {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}})
	if err := a.Start(context.Background()); err != nil {
		fmt.Println("start:", err)
		return 1
	}
	<-a.Settled()
	fmt.Println("calibration did not crash")
	return 1
}

// Commands queued in the agent's persistent session while it was offline
// arrive the moment it connects, before anything else: the pool and every
// model exist by then (no nil pool, no unknown_model, no race).
func TestQueuedCommandsBeforeStartAreServed(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	// The agent's session: subscribed to its commands, then gone.
	o := b.ClientOptions("edge-agent-dev1", "", "")
	session := paho.NewClient(o)
	if tok := session.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := session.Subscribe("edge/dev1/cmd/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	session.Disconnect(100)

	client := b.Subscribe(t, "client", "edge/dev1/reply/#")
	cat, err := os.ReadFile(tflitetest.Path(t, "cat.bmp"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		if i%2 == 0 {
			client.Publish(t, fmt.Sprintf("edge/dev1/cmd/status/q%d", i), []byte(`{}`))
		} else {
			client.Publish(t, fmt.Sprintf("edge/dev1/cmd/infer/q%d/v1", i), cat)
		}
	}
	cfg := mqttConfig(t, b.URL(), agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")})
	a := startNoWait(t, cfg, agent.Options{})
	defer a.Close()
	for range n {
		m := client.Next(t, 30*time.Second)
		var r struct {
			ID     string           `json:"id"`
			OK     bool             `json:"ok"`
			Error  *mqtt.ReplyError `json:"error"`
			Result json.RawMessage  `json:"result"`
		}
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			t.Fatal(err)
		}
		if !r.OK {
			t.Fatalf("queued %s: %+v", r.ID, r.Error)
		}
		if strings.Contains(string(r.Result), `"top"`) && !strings.Contains(string(r.Result), `"index":286`) {
			t.Fatalf("queued %s answered %s", r.ID, r.Result)
		}
	}
}
