package agent_test

// Helpers shared by the black-box tests of package agent: fixtures,
// starting agents and the edge-agent command, brokers, waiting.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	edgecli "github.com/edge-agent/edge-agent/agent/cli"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
	"golang.org/x/image/draw"
)

// The test binary doubles as the edge-agent command, so CLI tests check
// real exit statuses and signals without a separate build.
func TestMain(m *testing.M) {
	switch {
	case os.Getenv("EDGE_AGENT_TEST_CLI") == "1":
		ctx, stop := signalContext()
		code := edgecli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	case os.Getenv("EDGE_AGENT_TEST_FILL_CGROUP") != "":
		os.Exit(childFillCgroup(os.Getenv("EDGE_AGENT_TEST_FILL_CGROUP")))
	case os.Getenv("EDGE_AGENT_TEST_QUEUE") != "":
		os.Exit(childQueueEvents(os.Getenv("EDGE_AGENT_TEST_QUEUE")))
	case os.Getenv("EDGE_AGENT_TEST_CRASH_CALIBRATION") != "":
		os.Exit(childCrashCalibration(os.Getenv("EDGE_AGENT_TEST_CRASH_CALIBRATION")))
	}
	// No test agent serves a local broker on 127.0.0.1:1883 unless it asks
	// for one (children inherit this): they would meet on it.
	os.Setenv("EDGE_AGENT_MQTT_LOCAL_LISTEN", "off")
	os.Exit(m.Run())
}

type result struct {
	code           int
	stdout, stderr string
}

func cliCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "EDGE_AGENT_TEST_CLI=1")
	return cmd
}

func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("%v died of signal %v; stderr:\n%s", cmd.Args[1:], ws.Signal(), errb.String())
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

func cli(t *testing.T, args ...string) result { return runCmd(t, cliCmd(t, args...)) }

func writeFile(t *testing.T, path string, b []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// logBuf collects a child's log lines; the scanner goroutine writes while
// the test may read.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(line + "\n")
}

// waitFor waits until the log holds want; otherwise it kills cmd and fails.
func (l *logBuf) waitFor(t *testing.T, cmd *exec.Cmd, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(l.String(), want) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no %q in the log:\n%s", want, l)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stopRun sends SIGTERM and fails unless `run` exits cleanly.
func stopRun(t *testing.T, cmd *exec.Cmd, logs *logBuf, done <-chan error) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-done; err != nil {
		t.Fatalf("exit: %v\n%s", err, logs)
	}
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRun starts `run` in dir and waits for its "ready" log line. done
// delivers the exit once the child's output has been read to the end.
func startRun(t *testing.T, dir string, args ...string) (*exec.Cmd, *logBuf, <-chan error) {
	t.Helper()
	cmd := cliCmd(t, append([]string{"run"}, args...)...)
	cmd.Dir = dir
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	logs := &logBuf{}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			logs.add(sc.Text())
			if !once && strings.Contains(sc.Text(), "msg=ready") {
				once = true
				close(ready)
			}
		}
	}()
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-scanned
		done <- err
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("run exited before ready: %v\n%s", err, logs)
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("run not ready:\n%s", logs)
	}
	return cmd, logs, done
}

func signalContext() (context.Context, context.CancelFunc) {
	return signalNotify()
}

func runConfig(t *testing.T, dir, extra string, models ...agent.ModelConfig) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = %q\n", filepath.Join(dir, "state"))
	b.WriteString("[calibration]\nruns = 1\nsteady_invokes = 1\nmax_threads = 1\n")
	fmt.Fprintf(&b, "[power]\nsysfs_root = %q\nbusy_load_per_core = 1000.0\n", fixture("rpi"))
	b.WriteString(extra)
	for _, m := range models {
		fmt.Fprintf(&b, "[[models]]\nid = %q\npath = %q\npinned = %v\n", m.ID, m.Path, m.Pinned)
	}
	return writeFile(t, filepath.Join(dir, "edge-agent.toml"), []byte(b.String()), 0o644)
}

// stepper drives one loop by hand through Options.Ticks.
type stepper struct {
	t    *testing.T
	name string
	c    chan time.Time
}

func (s *stepper) ticks(loop string) <-chan time.Time {
	if loop == s.name {
		return s.c
	}
	return nil
}

// step makes the loop check n times and returns once those checks have
// finished: a tick is taken only when the loop is back waiting, so the
// (n+1)th send proves the nth check done.
func (s *stepper) step(n int) {
	s.t.Helper()
	for range n + 1 {
		select {
		case s.c <- time.Now():
		case <-time.After(10 * time.Second):
			s.t.Fatalf("the %s loop is not running", s.name)
		}
	}
}

func newStepper(t *testing.T, loop string) *stepper {
	return &stepper{t: t, name: loop, c: make(chan time.Time)}
}

// wakeBarrier returns once every wake posted before it has been planned
// and recorded: wakes are planned in order.
func wakeBarrier(t *testing.T, a *agent.Agent) {
	t.Helper()
	if _, err := a.Wake(context.Background(), "barrier"); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

func mqttConfig(t *testing.T, broker string, models ...agent.ModelConfig) agent.Config {
	cfg := testConfig(t, models...)
	cfg.MQTT.Brokers = []string{broker}
	cfg.MQTT.Device = "dev1"
	cfg.MQTT.KeepAlive = 2 * time.Second
	cfg.MQTT.ConnectWait = 5 * time.Second
	cfg.Fleet.Enabled = false // the fleet tests turn it on
	return cfg
}

// events collects test events by their "n" field, counting duplicates.
type events struct {
	seen  map[int]int
	order []int
	seqs  map[int]float64
}

func collect(t *testing.T, sub *mqtttest.Subscriber, want int, timeout time.Duration) events {
	t.Helper()
	ev := events{seen: map[int]int{}, seqs: map[int]float64{}}
	deadline := time.After(timeout)
	for len(ev.seen) < want {
		select {
		case m := <-sub.Chan():
			var e struct {
				Event string  `json:"event"`
				N     int     `json:"n"`
				Seq   float64 `json:"seq"`
			}
			if json.Unmarshal(m.Payload, &e) != nil || e.Event != "test" {
				continue
			}
			if ev.seen[e.N] == 0 {
				ev.order = append(ev.order, e.N)
			}
			if s, ok := ev.seqs[e.N]; ok && s != e.Seq {
				t.Fatalf("event %d arrived with seq %v and %v", e.N, s, e.Seq)
			}
			ev.seqs[e.N] = e.Seq
			ev.seen[e.N]++
		case <-deadline:
			t.Fatalf("got %d of %d events", len(ev.seen), want)
		}
	}
	return ev
}

func (ev events) duplicates() int {
	d := 0
	for _, n := range ev.seen {
		d += n - 1
	}
	return d
}

func float32Input(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutine leak: %d > %d\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// argmax of a JSON data array.
func argmax(t *testing.T, data []any) int {
	t.Helper()
	best, at := -1.0, -1
	for i, v := range data {
		if f, ok := v.(float64); ok && f > best {
			best, at = f, i
		}
	}
	if at < 0 {
		t.Fatalf("no numbers in output data (%d elements)", len(data))
	}
	return at
}

func startOIP(t *testing.T, listen string, edit func(*agent.Config)) (*agent.Agent, string) {
	t.Helper()
	cfg := testConfig(t, agent.ModelConfig{ID: oipModel, Path: tflitetest.Path(t, oipModel+".tflite"),
		Labels: tflitetest.Path(t, "imagenet_labels.txt")})
	cfg.HTTP.Listen = listen
	if edit != nil {
		edit(&cfg)
	}
	a := start(t, cfg, agent.Options{})
	t.Cleanup(func() { a.Close() })
	_, port, _ := net.SplitHostPort(listen)
	return a, "http://127.0.0.1:" + port
}

// promtoolCheck lints a /metrics body with promtool, which must be
// installed (Debian: prometheus): a lint that skips shows nothing.
func promtoolCheck(t *testing.T, body []byte) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not installed (Debian: prometheus): cannot lint /metrics")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func idleSystem() power.System { return power.System{Load1: 0.1, Cores: 2, MemAvailMiB: 2048} }

func fixture(name string) string { return filepath.Join("..", "power", "testdata", name) }

func planModels(t *testing.T) []agent.ModelConfig {
	return []agent.ModelConfig{
		{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite"), Pinned: true},
		{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"), Labels: tflitetest.Path(t, "imagenet_labels.txt")},
		{ID: "v2", Path: tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite"), Labels: tflitetest.Path(t, "imagenet_labels.txt")},
		{ID: "lstm", Path: tflitetest.Path(t, "keras_lstm_mnist_ptq.tflite")},
	}
}

func loadsOf(a *agent.Agent) map[string]uint64 {
	out := map[string]uint64{}
	for _, m := range a.Pool().Models() {
		out[m.ID] = m.Loads
	}
	return out
}

// gate holds the warm-up of one model while armed, so a test can act
// during it.
type gate struct {
	armed   atomic.Bool
	model   string
	reached chan string
	release chan struct{}
}

func newGate(model string) *gate {
	return &gate{model: model, reached: make(chan string, 16), release: make(chan struct{})}
}

func (g *gate) hook(ctx context.Context, model string) {
	if !g.armed.Load() || model != g.model {
		return
	}
	g.reached <- model
	select {
	case <-g.release:
	case <-ctx.Done():
	}
}

func wakeEvents(t *testing.T, a *agent.Agent, source string) int {
	t.Helper()
	msgs, err := a.Store().Pending(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range msgs {
		var e struct{ Event, Source string }
		if json.Unmarshal(m.Payload, &e) == nil && e.Event == "wake" && e.Source == source {
			n++
		}
	}
	return n
}

func signalNotify() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// quietLog discards the agent's log; EDGE_AGENT_TEST_LOG=1 shows it.
func quietLog() *slog.Logger {
	if os.Getenv("EDGE_AGENT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a configuration over a fresh state dir with a quick
// calibration. The model watch is off: tests that change files rescan
// when they mean to (the watch tests switch it on).
func testConfig(t *testing.T, models ...agent.ModelConfig) agent.Config {
	t.Helper()
	cfg := agent.DefaultConfig()
	off := false
	cfg.Updates.Watch = &off
	cfg.MQTT.LocalListen = "" // tests that want one ask for it
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.Calibration = agent.CalibrationConfig{Runs: 3, SteadyInvokes: 3, MaxThreads: 2, IdleAfter: 10 * time.Millisecond}
	cfg.Models = models
	// A board on external power, whatever machine runs the tests.
	cfg.Power.SysfsRoot = filepath.Join("..", "power", "testdata", "rpi")
	return cfg
}

func start(t *testing.T, cfg agent.Config, o agent.Options) *agent.Agent {
	t.Helper()
	a := startNoWait(t, cfg, o)
	// What the start does in the background (warming the rest of its plan,
	// calibrating) is done before the test looks.
	select {
	case <-a.Settled():
	case <-time.After(3 * time.Minute):
		a.Close()
		t.Fatal("start's background work not settled within 3 minutes")
	}
	return a
}

// startNoWait starts an agent and returns as soon as Start does: pinned
// models warm, the rest servable.
func startNoWait(t *testing.T, cfg agent.Config, o agent.Options) *agent.Agent {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.System == nil {
		// An idle CPU, whatever else the test machine is doing.
		o.System = func() power.System { return power.System{Load1: 0.1, Cores: 2, MemAvailMiB: 2048} }
	}
	a := agent.New(cfg, quietLog(), o)
	if err := a.Start(context.Background()); err != nil {
		a.Close()
		t.Fatal(err)
	}
	return a
}

func byID(t *testing.T, rep agent.StartupReport, id string) agent.ModelReport {
	t.Helper()
	for _, m := range rep.Models {
		if m.ID == id {
			return m
		}
	}
	t.Fatalf("model %s not in report", id)
	return agent.ModelReport{}
}

func copyFile(t *testing.T, src, dst string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// replaceFile writes b to a temporary file and renames it over path, as
// deployment tools and OTA updaters do.
func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// eventsOf returns the events of kind the agent queued so far.
func eventsOf(t *testing.T, a *agent.Agent, kind string) []map[string]any {
	t.Helper()
	msgs, err := a.Store().Pending(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, m := range msgs {
		var e map[string]any
		if json.Unmarshal(m.Payload, &e) == nil && e["event"] == kind {
			out = append(out, e)
		}
	}
	return out
}

// waitEvents waits until the agent has queued at least n events of kind.
func waitEvents(t *testing.T, a *agent.Agent, kind string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ev := eventsOf(t, a, kind)
		if len(ev) >= n {
			return ev
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s events within a minute, want %d", len(ev), kind, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// updateAgent serves model "cls" from a file it may replace.
func updateAgent(t *testing.T, first []byte, m agent.ModelConfig) (*agent.Agent, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cls.tflite")
	replaceFile(t, path, first)
	m.ID, m.Path = "cls", path
	a := start(t, testConfig(t, m), agent.Options{})
	t.Cleanup(func() { _ = a.Close() })
	return a, path
}

func rescanNow(t *testing.T, a *agent.Agent) agent.ReloadResult {
	t.Helper()
	res, err := a.Command(context.Background(), mqtt.Command{Verb: "rescan"})
	if err != nil {
		t.Fatal(err)
	}
	return res.(agent.ReloadResult)
}

// smallPNG is the shared image name scaled to size×size, as a PNG: what a
// camera client would send, and cheap to decode.
func smallPNG(t *testing.T, name string, size int) []byte {
	t.Helper()
	src, err := infer.DecodeImage(readShared(t, name), 0)
	if err != nil {
		t.Fatal(err)
	}
	dst := image.NewRGBA(image.Rect(0, 0, size, size))
	draw.BiLinear.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	var buf bytes.Buffer
	if err := png.Encode(&buf, dst); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// warmBytes serves model file b alone, pinned and without a budget, and
// returns what the pool accounts for it warm.
func warmBytes(t *testing.T, b []byte) int64 {
	t.Helper()
	a, _ := updateAgent(t, b, agent.ModelConfig{Pinned: true})
	top1(t, a, "cls", readShared(t, "cat.bmp"))
	return a.Pool().Stats().BytesInUse
}

// rawInfer asks the agent for model's raw output on input.
func rawInfer(t *testing.T, a *agent.Agent, model string, input []byte) []byte {
	t.Helper()
	payload, _ := json.Marshal(map[string]any{"model": model, "input": base64.StdEncoding.EncodeToString(input), "raw": true})
	res, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", ID: "w", Payload: payload})
	if err != nil {
		t.Fatalf("%s: %v", model, err)
	}
	return res.(agent.InferReply).Output
}

func readShared(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(tflitetest.Path(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// top1 asks model id about img and returns the top class.
func top1(t *testing.T, a *agent.Agent, id string, img []byte) int {
	t.Helper()
	res, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", Binary: true, Model: id, ID: "w", Payload: img})
	if err != nil {
		t.Fatalf("infer %s: %v", id, err)
	}
	return res.(agent.InferReply).Top[0].Index
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
