package agent_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

func TestStartupReportAndStatusOverMQTT(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	cfg := mqttConfig(t, b.URL(),
		agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"), Pinned: true},
		agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	a := start(t, cfg, agent.Options{})
	defer a.Close()

	sub := b.Subscribe(t, "fleet", "edge/dev1/#")
	var report map[string]any
	var status string
	deadline := time.After(20 * time.Second)
	for report == nil || status == "" {
		select {
		case m := <-sub.Chan():
			switch m.Topic {
			case "edge/dev1/telemetry/startup":
				// The report at READY, then the final one once the start's
				// background work (warming the rest, calibrating) is done.
				var r map[string]any
				if err := json.Unmarshal(m.Payload, &r); err != nil {
					t.Fatal(err)
				}
				if r["final"] == true {
					report = r
				}
			case "edge/dev1/status":
				status = string(m.Payload)
			}
		case <-deadline:
			t.Fatalf("report %v status %q", report != nil, status)
		}
	}
	if !strings.Contains(status, `"status":"online"`) {
		t.Fatalf("status %s", status)
	}
	// Whoever subscribes later still gets both, retained.
	late := b.Subscribe(t, "late", "edge/dev1/+/startup")
	if m := late.Next(t, 10*time.Second); !m.Retained || m.Topic != "edge/dev1/telemetry/startup" {
		t.Fatalf("startup report not retained: %v retained=%v", m, m.Retained)
	}
	for _, k := range []string{"schema", "seq", "agent", "runtime", "boot_id", "hardware", "hardware_fingerprint", "state",
		"broker_connected", "timings", "models", "pool", "process"} {
		if _, ok := report[k]; !ok {
			t.Errorf("startup report lacks %q", k)
		}
	}
	timings := report["timings"].(map[string]any)
	for _, k := range []string{"state_open_ms", "broker_connect_ms", "restore_ms", "prewarm_ms", "total_ms"} {
		if _, ok := timings[k]; !ok {
			t.Errorf("timings lack %q", k)
		}
	}
	if report["process"].(map[string]any)["rss_bytes"].(float64) <= 0 || report["boot_id"] == "" {
		t.Errorf("rss/boot id missing: %v %v", report["process"], report["boot_id"])
	}
	models := report["models"].([]any)
	if len(models) != 2 {
		t.Fatalf("models %v", models)
	}
	for _, m := range models {
		mm := m.(map[string]any)
		for _, k := range []string{"id", "sha256", "calibration", "calibration_ms", "threads", "delegate", "load"} {
			if _, ok := mm[k]; !ok {
				t.Errorf("model %v lacks %q", mm["id"], k)
			}
		}
		load := mm["load"].(map[string]any)
		for _, k := range []string{"stages", "footprint"} {
			if _, ok := load[k]; !ok {
				t.Errorf("model load lacks %q", k)
			}
		}
		stages := load["stages"].(map[string]any)
		for _, k := range []string{"map_ms", "interpreter_ms", "allocate_ms", "first_invoke_ms", "steady_invoke_ms"} {
			if _, ok := stages[k]; !ok {
				t.Errorf("stages lack %q", k)
			}
		}
		if mm["calibration"].(map[string]any)["status"] != "new" {
			t.Errorf("calibration status %v", mm["calibration"])
		}
	}
}

func TestBrokerKilledWhileEventsAreProduced(t *testing.T) {
	const total = 1000
	b := mqtttest.Start(t, mqtttest.Options{})
	proxy := mqtttest.StartProxy(t, b)
	cfg := mqttConfig(t, proxy.URL(), agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	sub := b.Subscribe(t, "fleet", "edge/dev1/telemetry/events")

	produced := make(chan error, 1)
	go func() {
		for i := 1; i <= total; i++ {
			if err := a.Event("test", map[string]any{"n": i}); err != nil {
				produced <- err
				return
			}
			if i == 300 {
				// SIGKILL the broker mid-stream; the agent is cut off with it.
				proxy.Hold()
				b.Kill()
			}
		}
		produced <- nil
	}()
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	subs := sub.Subscribed()
	time.Sleep(500 * time.Millisecond) // the pause
	b.Restart()
	// The test subscriber resubscribes before the agent may reconnect: a
	// restarted broker delivers only to subscribers it knows.
	deadline := time.Now().Add(30 * time.Second)
	for sub.Subscribed() == subs {
		if time.Now().After(deadline) {
			t.Fatal("the test subscriber did not resubscribe after the broker restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	proxy.Release()

	ev := collect(t, sub, total, time.Minute)
	for i := 1; i < len(ev.order); i++ {
		if ev.order[i] < ev.order[i-1] || ev.seqs[ev.order[i]] <= ev.seqs[ev.order[i-1]] {
			t.Fatalf("out of order at %d: %d after %d", i, ev.order[i], ev.order[i-1])
		}
	}
	t.Logf("%d of %d events arrived in order; %d duplicates (same seq); mqtt %+v", len(ev.seen), total, ev.duplicates(), *a.Status().Metrics.MQTT)
}

// childQueueEvents starts an agent from the config file, queues n events
// while the broker is down, says so, then waits to be killed.
func childQueueEvents(arg string) int {
	cfgPath, nStr, _ := strings.Cut(arg, ",")
	n, _ := strconv.Atoi(nStr)
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil {
		fmt.Println("config:", err)
		return 1
	}
	a := agent.New(cfg, quietLog(), agent.Options{})
	if err := a.Start(context.Background()); err != nil {
		fmt.Println("start:", err)
		return 1
	}
	for i := 1; i <= n; i++ {
		if err := a.Event("test", map[string]any{"n": i}); err != nil {
			fmt.Println("event:", err)
			return 1
		}
	}
	fmt.Println("queued")
	select {}
}

func TestQueuedEventsSurviveAgentKillWhileBrokerDown(t *testing.T) {
	const total = 500
	b := mqtttest.Start(t, mqtttest.Options{})
	url := b.URL()
	b.Stop()
	dir := t.TempDir()
	cfgPath := runConfig(t, dir, fmt.Sprintf("[mqtt]\nbrokers = [%q]\ndevice = \"dev1\"\nconnect_wait = \"100ms\"\n", url),
		agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})

	child := cliCmd(t)
	child.Env = append(os.Environ(), "EDGE_AGENT_TEST_QUEUE="+cfgPath+","+strconv.Itoa(total))
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 64)
	n, _ := out.Read(line)
	if !strings.Contains(string(line[:n]), "queued") {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("child: %q", line[:n])
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()

	b.Restart()
	sub := b.Subscribe(t, "fleet", "edge/dev1/telemetry/events")
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	ev := collect(t, sub, total, time.Minute)
	t.Logf("%d of %d queued events delivered after the agent was killed; %d duplicates", len(ev.seen), total, ev.duplicates())
}

func TestLastWillWhenAgentKilled(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	dir := t.TempDir()
	keepalive := 2 * time.Second
	cfgPath := runConfig(t, dir, fmt.Sprintf("[mqtt]\nbrokers = [%q]\ndevice = \"dev1\"\nkeepalive = %q\n", b.URL(), keepalive.String()),
		agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	sub := b.Subscribe(t, "fleet", "edge/dev1/status")
	waitStatus := func(want string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		deadline := time.After(within)
		for {
			select {
			case m := <-sub.Chan():
				if strings.Contains(string(m.Payload), `"status":"`+want+`"`) {
					return time.Since(start)
				}
			case <-deadline:
				t.Fatalf("no %q status within %v", want, within)
			}
		}
	}
	cmd, _, done := startRun(t, dir, "--config", cfgPath)
	waitStatus("online", 30*time.Second)
	killed := time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
	// The socket closes with the process, so mosquitto sends the will at
	// once (ms); at the latest it would after 1.5 × keepalive without
	// traffic. The bound allows that plus a slow machine's margin.
	waitStatus("offline", 3*keepalive/2+10*time.Second)
	t.Logf("offline %v after SIGKILL (keepalive %v)", time.Since(killed), keepalive)
	cmd2, logs2, done2 := startRun(t, dir, "--config", cfgPath)
	waitStatus("online", 30*time.Second)
	stopRun(t, cmd2, logs2, done2)
	waitStatus("offline", 10*time.Second) // published on a clean stop
}

func TestCommandBurst(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	sub := b.Subscribe(t, "operator", "edge/dev1/reply/#")
	goroutines := runtime.NumGoroutine()
	cfg := mqttConfig(t, b.URL(),
		agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite"), Pinned: true},
		agent.ModelConfig{ID: "lstm", Path: tflitetest.Path(t, "keras_lstm_mnist_ptq.tflite")})
	cfg.MQTT.CommandQueue = 2048
	cfg.MQTT.MaxPayload = 64 << 10
	a := start(t, cfg, agent.Options{})

	type want struct {
		ok    bool
		code  string
		check func(map[string]any) bool
	}
	expect := map[string]want{}
	send := func(id, topic string, payload []byte, w want) {
		expect[id] = w
		sub.PublishAsync("edge/dev1/cmd/"+topic, payload)
	}
	xorHigh := func(m map[string]any) bool {
		top := m["top"].([]any)
		return top[0].(map[string]any)["score"].(float64) > 0.5
	}
	xorLow := func(m map[string]any) bool {
		top := m["top"].([]any)
		return top[0].(map[string]any)["score"].(float64) < 0.5
	}
	for i := range 1000 {
		id := fmt.Sprintf("r%04d", i)
		switch i % 12 {
		case 0:
			send(id, "status", []byte(`{"id":"`+id+`","schema":1}`), want{ok: true})
		case 1:
			in := base64.StdEncoding.EncodeToString(float32Input(0, 1))
			send(id, "infer", []byte(`{"id":"`+id+`","model":"xor","input":"`+in+`","top":1}`), want{ok: true, check: xorHigh})
		case 2:
			send(id, "infer/"+id+"/xor", float32Input(1, 1), want{ok: true, check: xorLow})
		case 3:
			send(id, "pin", []byte(`{"id":"`+id+`","model":"lstm"}`), want{ok: true})
		case 4:
			send(id, "prewarm", []byte(`{"id":"`+id+`","model":"lstm"}`), want{ok: true})
		case 5:
			send(id, "infer/"+id, []byte(`{"model":"xor", "input": `), want{code: "bad_request"})
		case 6:
			send(id, "status", []byte(`{"id":"`+id+`","verbose":true}`), want{code: "bad_request"})
		case 7:
			send(id, "infer/"+id, []byte(`{"model":"xor","input":"`+strings.Repeat("A", 70<<10)+`"}`), want{code: "payload_too_large"})
		case 8:
			send(id, "prewarm", []byte(`{"id":"`+id+`","model":"nosuchmodel"}`), want{code: "unknown_model"})
		case 9:
			in := base64.StdEncoding.EncodeToString(make([]byte, 7))
			send(id, "infer", []byte(`{"id":"`+id+`","model":"xor","input":"`+in+`"}`), want{code: "input_size"})
		case 10:
			send(id, "evict", []byte(`{"id":"`+id+`","model":"../../etc/passwd"}`), want{code: "bad_model_id"})
		case 11:
			send(id, "frobnicate", []byte(`{"id":"`+id+`"}`), want{code: "unknown_verb"})
		}
	}
	got := map[string]mqtt.Reply{}
	raw := map[string]map[string]any{}
	deadline := time.After(2 * time.Minute)
	for len(got) < len(expect) {
		select {
		case m := <-sub.Chan():
			var r mqtt.Reply
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				t.Fatalf("reply %s: %v", m.Payload, err)
			}
			if _, dup := got[r.ID]; dup {
				continue
			}
			got[r.ID] = r
			var full struct {
				Result map[string]any `json:"result"`
			}
			json.Unmarshal(m.Payload, &full)
			raw[r.ID] = full.Result
		case <-deadline:
			t.Fatalf("%d of %d replies", len(got), len(expect))
		}
	}
	codes := map[string]int{}
	for id, w := range expect {
		r := got[id]
		if w.ok {
			if !r.OK || (w.check != nil && !w.check(raw[id])) {
				t.Fatalf("%s: %+v %v", id, r, raw[id])
			}
			codes["ok"]++
			continue
		}
		if r.OK || r.Error.Code != w.code {
			t.Fatalf("%s: %+v, want %s", id, r, w.code)
		}
		codes[w.code]++
	}
	keys := make([]string, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("1000 commands answered: %v", codes)
	if s := a.Status().Metrics.MQTT; !s.Connected || s.Connects != 1 {
		t.Fatalf("connection did not stay up: %+v", s)
	}
	a.Close()
	waitGoroutines(t, goroutines)
}
