package agent_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/hardware"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

func TestRestartRestoresCalibration(t *testing.T) {
	cfg := testConfig(t,
		agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"), Pinned: true},
		agent.ModelConfig{ID: "v2", Path: tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite")},
		agent.ModelConfig{ID: "lstm", Path: tflitetest.Path(t, "keras_lstm_mnist_ptq.tflite")},
	)
	first := start(t, cfg, agent.Options{})
	r1 := first.Report()
	first.Close()
	second := start(t, cfg, agent.Options{})
	defer second.Close()
	r2 := second.Report()

	for _, id := range []string{"v1", "v2", "lstm"} {
		m1, m2 := byID(t, r1, id), byID(t, r2, id)
		if m1.Calibration.Status != storage.New || m1.CalibrationTime <= 0 || m1.Calibrated == nil || len(m1.Calibrated.Tried) != 2 {
			t.Errorf("%s first start: %+v", id, m1)
			continue
		}
		if m2.Calibration.Status != storage.Restored || m2.CalibrationTime != 0 || !m2.DigestCached {
			t.Errorf("%s second start: status %s, calibration %v, digest cached %v", id, m2.Calibration.Status, m2.CalibrationTime, m2.DigestCached)
		}
		if m2.Threads != m1.Threads || m2.Calibrated.HeapBytes != m1.Calibrated.HeapBytes {
			t.Errorf("%s restored a different calibration: %+v vs %+v", id, m2.Calibrated, m1.Calibrated)
		}
		if m2.Load == nil || m2.Error != nil {
			t.Errorf("%s not warm after restore: %+v", id, m2)
		}
		t.Logf("%s: threads %d (tried %v), first-invoke penalty %.2f, heap %d", id, m1.Threads, m1.Calibrated.Tried, m1.Calibrated.FirstInvokePenalty, m1.Calibrated.HeapBytes)
	}
	t.Logf("restore stage: first start %v (calibrating), second %v (restored): %.1fx faster; total start %v vs %v",
		r1.Timings.Restore, r2.Timings.Restore, float64(r1.Timings.Restore)/float64(r2.Timings.Restore), r1.Timings.Total, r2.Timings.Total)
}

func TestCalibrationInvalidation(t *testing.T) {
	hw := func(board string) string { return filepath.Join("testdata", "hw", board) }
	base := agent.Options{HardwareRoot: hw("x86")}
	cases := []struct {
		name   string
		change func(modelPath string) agent.Options
		reason string
	}{
		{"new content at the same path", func(p string) agent.Options {
			copyFile(t, tflitetest.Path(t, "xor_model.tflite"), p)
			return base
		}, "model"},
		{"another runtime version", func(string) agent.Options {
			o := base
			o.RuntimeVersion = "2.99.0"
			return o
		}, "runtime"},
		{"another board", func(string) agent.Options {
			o := base
			o.HardwareRoot = hw("rpi4")
			return o
		}, "hardware"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := copyFile(t, tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"), filepath.Join(t.TempDir(), "model.tflite"))
			cfg := testConfig(t, agent.ModelConfig{ID: "m", Path: path})
			a := start(t, cfg, base)
			first := byID(t, a.Report(), "m")
			a.Close()
			if first.Calibration.Status != storage.New {
				t.Fatalf("first start: %+v", first.Calibration)
			}
			o := c.change(path)
			a = start(t, cfg, o)
			m := byID(t, a.Report(), "m")
			a.Close()
			if m.Calibration.Status != storage.Invalidated || m.Calibration.Reason != c.reason || m.CalibrationTime <= 0 {
				t.Fatalf("calibration %+v after %s (measured again: %v)", m.Calibration, c.name, m.CalibrationTime)
			}
			// The new fact is restored next time under the same key.
			a = start(t, cfg, o)
			defer a.Close()
			if s := byID(t, a.Report(), "m").Calibration.Status; s != storage.Restored {
				t.Fatalf("after recalibration: %s", s)
			}
		})
	}
}

func TestHardwareFingerprintFixtures(t *testing.T) {
	pi := hardware.Read(filepath.Join("testdata", "hw", "rpi4"))
	if pi.Cores != 4 || pi.Board != "Raspberry Pi 4 Model B Rev 1.4" || !strings.Contains(pi.CPUModel, "part=0xd08") {
		t.Fatalf("rpi4: %+v", pi)
	}
	x86 := hardware.Read(filepath.Join("testdata", "hw", "x86"))
	if x86.Cores != 2 || x86.CPUModel != "AMD EPYC 7B13" || x86.Board != "" {
		t.Fatalf("x86: %+v", x86)
	}
	if pi.Fingerprint() == x86.Fingerprint() || x86.Fingerprint() != hardware.Read(filepath.Join("testdata", "hw", "x86")).Fingerprint() {
		t.Fatal("fingerprints not distinct and stable")
	}
	if none := hardware.Read(t.TempDir()); none.Cores == 0 {
		t.Fatalf("missing /proc: %+v", none)
	}
}

func TestMissingDelegateLibraryRecordedNotRetried(t *testing.T) {
	cfg := testConfig(t, agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite"), Delegates: []string{"edgetpu"}})
	cfg.Delegates = []agent.DelegateConfig{{Name: "edgetpu", Library: "/nonexistent/libedgetpu.so.1"}}
	for run, want := range []storage.Status{storage.New, storage.Restored} {
		a := start(t, cfg, agent.Options{})
		m := byID(t, a.Report(), "xor")
		if m.Delegate.Chosen != "cpu" || len(m.Delegate.Tried) != 1 || m.Delegate.Tried[0].State != storage.Failed ||
			m.Delegate.Tried[0].Status != want || !strings.Contains(m.Delegate.Tried[0].Reason, "No such file") || m.Load == nil {
			t.Fatalf("run %d: %+v", run, m.Delegate)
		}
		a.Close()
	}
}

func TestEdgeTPUModelFallsBackToCPUTwin(t *testing.T) {
	cfg := testConfig(t, agent.ModelConfig{
		ID: "classifier", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant_edgetpu.tflite"),
		Delegates: []string{"edgetpu"}, CPUTwin: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"),
	})
	cfg.Delegates = []agent.DelegateConfig{{Name: "edgetpu", Library: "libedgetpu.so.1"}}
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	m := byID(t, a.Report(), "classifier")
	if m.Delegate.Chosen != "cpu" || m.Delegate.Fallback == "" || m.Error != nil {
		t.Fatalf("report %+v", m)
	}
	l, err := a.Pool().Acquire(context.Background(), "classifier")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	in, err := infer.FromFile(tflitetest.Path(t, "cat.bmp"), l.Interpreter().Inputs()[0], infer.DefaultNormalization, 0)
	if err != nil {
		t.Fatal(err)
	}
	labels, _ := infer.ReadLabels(tflitetest.Path(t, "imagenet_labels.txt"))
	top, err := infer.Classify(l.Interpreter(), in.Bytes, 1, labels)
	if err != nil || top[0].Label != "Egyptian cat" {
		t.Fatalf("classify: %+v %v", top, err)
	}
}

func TestAcceleratorModelWithoutTwinIsReported(t *testing.T) {
	cfg := testConfig(t,
		agent.ModelConfig{ID: "tpu", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant_edgetpu.tflite")},
		agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	if m := byID(t, a.Report(), "tpu"); m.Error == nil || m.Error.Code != "model_needs_delegate" {
		t.Fatalf("tpu: %+v", m)
	}
	if m := byID(t, a.Report(), "xor"); m.Load == nil {
		t.Fatalf("xor not warm: %+v", m)
	}
}

// buildPlugin compiles testdata/noop_delegate.c into a delegate library
// with the TFLite headers the build uses.
func buildPlugin(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "libnoop_delegate.so")
	args := []string{"-shared", "-fPIC", "-O1", "-o", out, filepath.Join("testdata", "noop_delegate.c")}
	args = append(args, strings.Fields(os.Getenv("CGO_CFLAGS"))...)
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("build delegate plugin (make test installs gcc and sets CGO_CFLAGS): %v\n%s", err, b)
	}
	return out
}

func TestWorkingDelegateIsChosenAndRestored(t *testing.T) {
	lib := buildPlugin(t)
	cfg := testConfig(t, agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite"), Delegates: []string{"noop"}})
	cfg.Delegates = []agent.DelegateConfig{{Name: "noop", Library: lib}}
	for _, want := range []storage.Status{storage.New, storage.Restored} {
		a := start(t, cfg, agent.Options{})
		m := byID(t, a.Report(), "xor")
		a.Close()
		if m.Delegate.Chosen != "noop" || m.Delegate.Tried[0].State != storage.Worked || m.Delegate.Tried[0].Status != want || m.Load == nil {
			t.Fatalf("%s: %+v load=%v err=%+v", want, m.Delegate, m.Load, m.Error)
		}
		if got := m.Load.Delegates; len(got) != 1 || got[0] != "noop" {
			t.Fatalf("pool interpreter delegates %v", got)
		}
	}
}

func TestDelegateCrashIsRememberedAcrossRestarts(t *testing.T) {
	lib := buildPlugin(t)
	dir := t.TempDir()
	marker := filepath.Join(dir, "inside-delegate")
	report := filepath.Join(dir, "startup.json")
	cfgPath := writeFile(t, filepath.Join(dir, "edge-agent.toml"), []byte(`
state_dir = "`+filepath.Join(dir, "state")+`"
[calibration]
runs = 1
steady_invokes = 1
max_threads = 1
# The delegate is tried by the calibrator, which the energy policy defers
# while the CPU is busy: the rest of the test suite must not hold it off.
[power]
busy_load_per_core = 1000
[[delegates]]
name = "flaky"
library = "`+lib+`"
[[models]]
id = "xor"
path = "`+tflitetest.Path(t, "xor_model.tflite")+`"
pinned = true
delegates = ["flaky"]
`), 0o644)

	// First start: the delegate never returns; kill the process inside it.
	cmd := cliCmd(t, "run", "--config", cfgPath, "--report", report)
	cmd.Env = append(cmd.Env, "EDGE_TEST_DELEGATE_HANG=1", "EDGE_TEST_DELEGATE_MARKER="+marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the agent never entered the delegate")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	os.Remove(marker)

	// Second start: the attempt without outcome is marked crashed and the
	// delegate is not entered again; the model serves on the CPU.
	cmd2, logs, done := startRun(t, dir, "--config", cfgPath, "--report", report)
	stopRun(t, cmd2, logs, done)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the crashed delegate was tried again")
	}
	var rep agent.StartupReport
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.State.Crashed) != 1 || rep.State.Crashed[0].Delegate != "flaky" {
		t.Fatalf("crashed delegates %+v", rep.State.Crashed)
	}
	m := byID(t, rep, "xor")
	if m.Delegate.Chosen != "cpu" || m.Delegate.Tried[0].State != storage.Crashed || m.Load == nil {
		t.Fatalf("model %+v", m)
	}
	if !strings.Contains(logs.String(), "delegate crashed the process last time") {
		t.Fatalf("logs:\n%s", logs)
	}
}

func TestCorruptStateAtStartIsMovedAside(t *testing.T) {
	for name, damage := range map[string]func([]byte) []byte{
		"truncated":   func(b []byte) []byte { return b[:len(b)/3] },
		"bit flipped": func(b []byte) []byte { b[16+60] ^= 0x40; b[4096+16+60] ^= 0x40; return b },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite"), Pinned: true})
			a := start(t, cfg, agent.Options{})
			a.Close()
			db := filepath.Join(cfg.StateDir, storage.FileName)
			b, err := os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(db, damage(b), 0o600); err != nil {
				t.Fatal(err)
			}
			a = start(t, cfg, agent.Options{})
			defer a.Close()
			rep := a.Report()
			if rep.State.Corruption == nil {
				t.Fatalf("corruption not detected: %+v", rep.State)
			}
			if _, err := os.Stat(rep.State.Corruption.MovedTo); err != nil {
				t.Fatalf("damaged file not kept: %v", err)
			}
			if m := byID(t, rep, "xor"); m.Load == nil || m.Calibration.Status != storage.New {
				t.Fatalf("agent not serving on a fresh state: %+v", m)
			}
			msgs, err := a.Store().Pending(0, 10)
			if err != nil || len(msgs) == 0 || !strings.Contains(string(msgs[0].Payload), `"event":"state_corrupted"`) {
				t.Fatalf("corruption event not queued: %v %v", msgs, err)
			}
		})
	}
}

func TestStateLockedByAnotherAgent(t *testing.T) {
	cfg := testConfig(t, agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	cfg.State.LockTimeout = 100 * time.Millisecond
	b := agent.New(cfg, quietLog(), agent.Options{})
	defer b.Close()
	if err := b.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second agent on the same state: %v", err)
	}
}
