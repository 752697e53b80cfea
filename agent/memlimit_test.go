package agent_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent/infer/infertest"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// memCgroup is a real memory cgroup made for one test: cgroup v1's memory
// controller or v2's memory.max, under this process's own v1 memory cgroup
// or v2's root.
type memCgroup struct {
	dir string
	v2  bool
}

// newMemCgroup makes a cgroup limited to limit bytes (swap included where
// the kernel counts it), removed when the test ends.
func newMemCgroup(t *testing.T, limit int64) *memCgroup {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a memory cgroup needs root (CI and make test run as root)")
	}
	name := fmt.Sprintf("edge-agent-test-%d", os.Getpid())
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	c := &memCgroup{}
	for _, line := range strings.Split(string(self), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && strings.Contains(","+parts[1]+",", ",memory,") {
			c.dir = filepath.Join("/sys/fs/cgroup/memory", parts[2], name)
		}
	}
	if c.dir == "" { // unified hierarchy: a child of the root with memory on
		c.v2, c.dir = true, filepath.Join("/sys/fs/cgroup", name)
		ctl, err := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control")
		if err != nil {
			t.Fatalf("no v1 memory controller and no cgroup v2: %v", err)
		}
		if !strings.Contains(" "+string(ctl)+" ", " memory") {
			if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+memory"), 0o644); err != nil {
				t.Fatalf("enable the v2 memory controller: %v", err)
			}
		}
	}
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		t.Fatalf("make a memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		for range 50 {
			if err := os.Remove(c.dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("cgroup %s not removed", c.dir)
	})
	lim := strconv.FormatInt(limit, 10)
	if c.v2 {
		c.write(t, "memory.max", lim)
		_ = os.WriteFile(filepath.Join(c.dir, "memory.swap.max"), []byte("0"), 0o644)
	} else {
		c.write(t, "memory.limit_in_bytes", lim)
		_ = os.WriteFile(filepath.Join(c.dir, "memory.memsw.limit_in_bytes"), []byte(lim), 0o644)
	}
	return c
}

func (c *memCgroup) write(t *testing.T, file, v string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(c.dir, file), []byte(v), 0o644); err != nil {
		t.Fatalf("cgroup %s: %v", file, err)
	}
}

func (c *memCgroup) readInt(file, key string) int64 {
	b, err := os.ReadFile(filepath.Join(c.dir, file))
	if err != nil {
		return -1
	}
	s := strings.TrimSpace(string(b))
	if key != "" {
		for _, line := range strings.Split(s, "\n") {
			if v, ok := strings.CutPrefix(line, key+" "); ok {
				s = v
			}
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// peak is the most the cgroup held (memory.peak needs Linux 5.19 on v2).
func (c *memCgroup) peak() int64 {
	if c.v2 {
		return c.readInt("memory.peak", "")
	}
	return c.readInt("memory.max_usage_in_bytes", "")
}

func (c *memCgroup) oomKills() int64 {
	if c.v2 {
		return c.readInt("memory.events", "oom_kill")
	}
	return c.readInt("memory.oom_control", "oom_kill")
}

// command runs name inside the cgroup from its first instruction: a shell
// moves itself in, then execs it.
func (c *memCgroup) command(name string, args ...string) *exec.Cmd {
	return exec.Command("/bin/sh", append([]string{"-c",
		`echo $$ > "$CG/cgroup.procs" && exec "$0" "$@"`, name}, args...)...)
}

// buildAgent builds the real edge-agent binary into dir: the agent under
// test must not be this test binary, which `make test` builds with the race
// detector (its shadow memory would count against the cgroup).
func buildAgent(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "edge-agent")
	cmd := exec.Command("go", "build", "-ldflags=-linkmode=external", "-o", bin, "./cmd/edge-agent")
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./agent/cmd/edge-agent: %v\n%s", err, out)
	}
	return bin
}

// The agent in a real 160 MiB memory cgroup with budget = "auto", answering
// over a real mosquitto: four decompression bombs at once (each under the
// pixel limit and max_payload: progressive and baseline 4:4:4 JPEG,
// 16-bit and interlaced PNG), four camera-sized JPEGs that fit the decode
// budget one or two at a time, then 600 requests churning six shared
// models through a pool budget that holds only some of them. No OOM kill, every request answered (ok or a clear code), the
// cgroup's peak below its limit. Before the decode budget, the first bomb
// alone took 321 MB and the kernel killed the agent.
func TestMemoryLimitBombs(t *testing.T) {
	tflitetest.Long(t)
	const limit = 160 << 20
	cg := newMemCgroup(t, limit)
	broker := mqtttest.Start(t, mqtttest.Options{})
	dir := t.TempDir()
	type model struct{ id, file, input string }
	models := []model{
		{"v1", "mobilenet_v1_0.25_128_quant.tflite", "cat.bmp"},
		{"v2", "mobilenet_v2_1.0_224_quant.tflite", "grace_hopper.bmp"},
		{"bird", "mobilenet_v2_1.0_224_inat_bird_quant.tflite", "bird.bmp"},
		{"deeplab", "deeplabv3_mnv2_pascal_quant.tflite", "sunflower.bmp"},
		{"lstm", "keras_lstm_mnist_ptq.tflite", "mnist_nine.bmp"},
		{"xor", "xor_model.tflite", ""},
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "state_dir = %q\n[pool]\nbudget = \"auto\"\nmemory_check = \"500ms\"\n", filepath.Join(dir, "state"))
	fmt.Fprintf(&conf, "[updates]\nwatch = false\n[calibration]\nruns = 1\nsteady_invokes = 1\nmax_threads = 2\n")
	fmt.Fprintf(&conf, "[power]\nsysfs_root = %q\n", filepath.Join("..", "power", "testdata", "rpi"))
	fmt.Fprintf(&conf, "[mqtt]\nbrokers = [%q]\ndevice = \"memdev\"\nlocal_listen = \"\"\n", broker.URL())
	for _, m := range models {
		fmt.Fprintf(&conf, "[[models]]\nid = %q\npath = %q\n", m.id, tflitetest.Path(t, m.file))
	}
	cfgPath := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(cfgPath, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(dir, "report.json")
	cmd := cg.command(buildAgent(t, dir), "run", "--config", cfgPath, "--report", report)
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "CG="+cg.dir, "GOMEMLIMIT=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once the agent is gone (waitErr says how)
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	agentLog := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				t.Errorf("agent (pid %d) not gone 20 s after SIGKILL", cmd.Process.Pid)
			}
		}
	}()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(report); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("agent exited before ready: %v\n%s", waitErr, agentLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready within 60 s\n%s", agentLog())
		}
	}
	var rep struct {
		Memory json.RawMessage `json:"memory"`
	}
	b, _ := os.ReadFile(report)
	_ = json.Unmarshal(b, &rep)
	t.Logf("memory plan in the startup report: %s", rep.Memory)
	var plan struct {
		Decode int64 `json:"decode_budget_bytes"`
	}
	_ = json.Unmarshal(rep.Memory, &plan)

	sub := broker.Subscribe(t, "memtest", "edge/memdev/reply/#")
	inputs := map[string][]byte{}
	for _, m := range models {
		if m.input != "" {
			inputs[m.id] = readShared(t, m.input)
		} else {
			inputs[m.id] = make([]byte, 8) // xor: two float32
		}
	}
	codes := map[string]int{}
	sent, answered := 0, 0
	// send publishes one request; collect waits for n replies.
	send := func(model string, payload []byte) {
		sent++
		sub.Publish(t, fmt.Sprintf("edge/memdev/cmd/infer/r%d/%s", sent, model), payload)
	}
	collect := func(n int, timeout time.Duration) {
		t.Helper()
		deadline := time.After(timeout)
		for range n {
			select {
			case m := <-sub.Chan():
				var r mqtt.Reply
				if err := json.Unmarshal(m.Payload, &r); err != nil {
					t.Fatalf("reply %s: %v", m.Payload, err)
				}
				answered++
				code := "ok"
				if !r.OK {
					code = r.Error.Code
					if code == "" || r.Error.Message == "" {
						t.Errorf("reply without a clear code: %s", m.Payload)
					}
					if codes[code] == 0 {
						t.Logf("first %s: %s", code, r.Error.Message)
					}
				}
				codes[code]++
			case <-exited:
				t.Fatalf("agent died (%v) after %d of %d answers; cgroup OOM kills %d, peak %d of %d\n%s",
					waitErr, answered, sent, cg.oomKills(), cg.peak(), limit, agentLog())
			case <-deadline:
				t.Fatalf("%d of %d requests answered within %v; codes %v", answered, sent, timeout, codes)
			}
		}
	}

	before := cg.peak()
	bombs := map[string][]byte{
		"progressive 4:4:4 JPEG 3990²": infertest.FlatJPEG(3990, 3990, 1, 1, true),
		"baseline 4:4:4 JPEG 3990²":    infertest.FlatJPEG(3990, 3990, 1, 1, false),
		"16-bit RGBA PNG 2828²":        infertest.PNGOf(2828, 2828, 16, 6, false),
		"interlaced RGBA PNG 3990²":    infertest.PNGOf(3990, 3990, 8, 6, true),
	}
	for name, bomb := range bombs {
		if len(bomb) > 1<<20 {
			t.Fatalf("%s is %d bytes, over max_payload", name, len(bomb))
		}
		t.Logf("bomb %s: %d bytes", name, len(bomb))
		send("v2", bomb)
	}
	camera := infertest.FlatJPEG(1600, 1200, 2, 2, false)
	for range 4 {
		send("v1", camera)
	}
	collect(8, 60*time.Second)
	grew := cg.peak() - before
	t.Logf("after the bombs: %v; cgroup peak %.1f MiB, %.1f MiB above the peak before them (decode budget %.1f MiB)",
		codes, float64(cg.peak())/(1<<20), float64(grew)/(1<<20), float64(plan.Decode)/(1<<20))
	if plan.Decode == 0 || grew > plan.Decode {
		t.Errorf("the bombs raised the cgroup's peak by %d bytes, more than the decode budget %d", grew, plan.Decode)
	}
	if codes["ok"] < 4 {
		t.Errorf("the camera-sized images were not all answered: %v", codes)
	}

	// Churn: every model in turn, the slow ones less often (in 120
	// requests: deeplab once, the 224×224 MobileNets four times each: on
	// two cores their invokes take most of the run's CPU), a few requests
	// in flight.
	// A pool budget below what the six models take, so the requests load
	// and evict (the decode budget stays as the plan made it).
	sent++
	sub.Publish(t, fmt.Sprintf("edge/memdev/cmd/set-budget/r%d", sent), []byte(`{"budget":"20MiB"}`))
	collect(1, 30*time.Second)
	const churn, inFlight = 600, 4
	order := []string{"deeplab"}
	for i := range 119 {
		id := []string{"v1", "lstm", "xor"}[i%3]
		if i%15 == 7 {
			id = []string{"v2", "bird"}[i/15%2]
		}
		order = append(order, id)
	}
	start := time.Now()
	for i := range churn {
		if i >= inFlight {
			collect(1, 60*time.Second)
		}
		id := order[i%len(order)]
		send(id, inputs[id])
	}
	collect(inFlight, 60*time.Second)
	t.Logf("%d requests in %v: %v", churn, time.Since(start).Round(time.Millisecond), codes)

	sub.Publish(t, "edge/memdev/cmd/status/st", []byte(`{}`))
	select {
	case m := <-sub.Chan():
		var st struct {
			Result struct {
				Metrics struct {
					Pool    struct{ Evictions, Loads uint64 }
					Process struct {
						CPUSeconds float64 `json:"cpu_seconds"`
					}
					Memory struct {
						Decode json.RawMessage
					}
				}
			}
		}
		_ = json.Unmarshal(m.Payload, &st)
		t.Logf("agent CPU %.1f s; pool: %d loads, %d evictions; decode budget: %s", st.Result.Metrics.Process.CPUSeconds,
			st.Result.Metrics.Pool.Loads, st.Result.Metrics.Pool.Evictions, st.Result.Metrics.Memory.Decode)
		if st.Result.Metrics.Pool.Evictions == 0 {
			t.Error("no eviction: the models did not churn")
		}
	case <-time.After(10 * time.Second):
		t.Error("no status reply")
	}

	peak, kills := cg.peak(), cg.oomKills()
	t.Logf("cgroup peak %.1f MiB of a %d MiB limit (v2 %v), OOM kills %d", float64(peak)/(1<<20), limit>>20, cg.v2, kills)
	if kills != 0 {
		t.Errorf("the kernel OOM-killed %d times", kills)
	}
	if peak < 0 || peak >= limit {
		t.Errorf("cgroup peak %d, limit %d", peak, limit)
	}
	if answered != sent {
		t.Errorf("%d of %d answered", answered, sent)
	}
	if codes["ok"] < churn*9/10 {
		t.Errorf("only %d ok: %v", codes["ok"], codes)
	}
	select {
	case <-exited:
		t.Fatalf("agent exited: %v\n%s", waitErr, agentLog())
	default:
	}
}

// childFillCgroup allocates (and touches) memory a MiB at a time until
// its cgroup, as power.ReadMemory reads it, is above the given fraction of
// its limit, then prints that reading as JSON.
func childFillCgroup(fraction string) int {
	f, err := strconv.ParseFloat(fraction, 64)
	if err != nil {
		return 2
	}
	var held [][]byte
	for range 4096 {
		m := power.ReadMemory("/")
		if m.CgroupMax == nil || m.CgroupCurrent == nil {
			fmt.Println("{}")
			return 1
		}
		if float64(*m.CgroupCurrent) >= f*float64(*m.CgroupMax) {
			b, _ := json.Marshal(m)
			fmt.Println(string(b))
			runtime.KeepAlive(held)
			return 0
		}
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		held = append(held, b)
	}
	return 1
}

// The pressure the agent sheds on, read from a real memory cgroup: a
// process filling its 96 MiB cgroup sees the limit, its usage past
// pool.pressure_high (0.9) and the cgroup's peak, without an OOM kill.
func TestPressureReadFromARealCgroup(t *testing.T) {
	const limit = 96 << 20
	cg := newMemCgroup(t, limit)
	cmd := cg.command(os.Args[0])
	cmd.Env = append(os.Environ(), "EDGE_AGENT_TEST_FILL_CGROUP=0.9", "CG="+cg.dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v (%s); OOM kills %d", err, out, cg.oomKills())
	}
	var m power.Memory
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("child printed %q: %v", out, err)
	}
	if m.CgroupCurrent == nil || m.CgroupMax == nil {
		t.Fatalf("no cgroup in %s", out)
	}
	t.Logf("cgroup as the agent reads it: %s", out)
	if *m.CgroupMax != limit || float64(*m.CgroupCurrent) < 0.9*limit || m.CgroupPeak == nil || *m.CgroupPeak < *m.CgroupCurrent {
		t.Errorf("reading %+v: want max %d, current ≥ 90 %% of it, peak ≥ current", m, limit)
	}
	if m.CgroupOOMKills != 0 || cg.oomKills() != 0 {
		t.Errorf("OOM kills: %d", cg.oomKills())
	}
}
