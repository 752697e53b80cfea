package agent_test

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	edgecli "github.com/edge-agent/edge-agent/agent/cli"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

func TestCLIBadInputs(t *testing.T) {
	dir := t.TempDir()
	v2 := tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite")
	xor := tflitetest.Path(t, "xor_model.tflite")
	cat := tflitetest.Path(t, "cat.bmp")
	orig, err := os.ReadFile(v2)
	if err != nil {
		t.Fatal(err)
	}
	rnd := make([]byte, 32<<10)
	rand.New(rand.NewSource(7)).Read(rnd)
	hdr := bytes.Clone(orig)
	copy(hdr, []byte{0xff, 0xff, 0xff, 0x7f})
	empty := writeFile(t, filepath.Join(dir, "empty.tflite"), nil, 0o644)
	trunc := writeFile(t, filepath.Join(dir, "trunc.tflite"), orig[:len(orig)/2], 0o644)
	random := writeFile(t, filepath.Join(dir, "random.tflite"), rnd, 0o644)
	corrupt := writeFile(t, filepath.Join(dir, "hdr.tflite"), hdr, 0o644)
	fakePNG := writeFile(t, filepath.Join(dir, "photo.png"), []byte("hello, not a picture"), 0o644)
	raw7 := writeFile(t, filepath.Join(dir, "in.raw"), make([]byte, 7), 0o644)
	badCfg := writeFile(t, filepath.Join(dir, "bad.toml"), []byte("log_level = \"loud\"\nbudgett = 3\n"), 0o644)

	cases := []struct {
		name string
		args []string
		exit int
		code string
	}{
		{"empty model", []string{"infer", "--model", empty, "--input", cat}, edgecli.ExitModelFile, "model_empty"},
		{"truncated model", []string{"infer", "--model", trunc, "--input", cat}, edgecli.ExitModelFile, "model_truncated"},
		{"random bytes", []string{"infer", "--model", random, "--input", cat}, edgecli.ExitModelFile, "model_not_tflite"},
		{"corrupted header", []string{"infer", "--model", corrupt, "--input", cat}, edgecli.ExitModelFile, "model_invalid"},
		{"directory", []string{"infer", "--model", dir, "--input", cat}, edgecli.ExitModelFile, "model_not_regular"},
		{"missing", []string{"infer", "--model", filepath.Join(dir, "none.tflite"), "--input", cat}, edgecli.ExitModelFile, "model_not_found"},
		{"custom op", []string{"infer", "--model", tflitetest.Path(t, "model_invoking_error.tflite"), "--input", cat}, edgecli.ExitModelRuntime, "model_unresolved_op"},
		{"edge tpu only", []string{"infer", "--model", tflitetest.Path(t, "mobilenet_v1_0.25_128_quant_edgetpu.tflite"), "--input", cat}, edgecli.ExitModelRuntime, "model_needs_delegate"},
		{"image of the wrong kind", []string{"infer", "--model", v2, "--input", fakePNG}, edgecli.ExitInput, "input_image_decode"},
		{"image for a non-image model", []string{"infer", "--model", xor, "--input", cat}, edgecli.ExitInput, "input_not_image_model"},
		{"raw input wrong size", []string{"infer", "--model", xor, "--input", raw7}, edgecli.ExitInput, "input_size"},
		{"inspect corrupt", []string{"models", "inspect", trunc}, edgecli.ExitModelFile, "model_truncated"},
		{"unknown command", []string{"frobnicate"}, edgecli.ExitUsage, "usage"},
		{"missing flag", []string{"infer", "--model", v2}, edgecli.ExitUsage, "usage"},
		{"bad config", []string{"config", "check", badCfg}, edgecli.ExitConfig, "config_invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := cli(t, c.args...)
			if r.code != c.exit || !strings.Contains(r.stderr, "["+c.code+"]") {
				t.Fatalf("exit %d, stderr %q; want exit %d with [%s]", r.code, r.stderr, c.exit, c.code)
			}
		})
	}
	t.Run("json error", func(t *testing.T) {
		r := cli(t, "infer", "--json", "--model", trunc, "--input", cat)
		var doc struct {
			Schema int
			Error  struct{ Code, Message string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.Error.Code != "model_truncated" || doc.Schema != 1 {
			t.Fatalf("json error %q: %v", r.stdout, err)
		}
	})
	t.Run("config names the fields", func(t *testing.T) {
		r := cli(t, "config", "check", badCfg)
		if !strings.Contains(r.stderr, "budgett") {
			t.Fatalf("unknown field not named: %s", r.stderr)
		}
	})
}

func TestCLIUnreadableModel(t *testing.T) {
	// Run the command as an unprivileged user when we are root, so the file
	// permission really applies.
	dir, err := os.MkdirTemp("", "edge-agent-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(tflitetest.Path(t, "xor_model.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	model := writeFile(t, filepath.Join(dir, "secret.tflite"), data, 0o600)
	raw := writeFile(t, filepath.Join(dir, "in.raw"), make([]byte, 8), 0o644)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		self, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		bin := writeFile(t, filepath.Join(dir, "edge-agent.test"), self, 0o755)
		cmd = exec.Command(bin, "infer", "--model", model, "--input", raw)
		cmd.Env = append(os.Environ(), "EDGE_AGENT_TEST_CLI=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	} else {
		if err := os.Chmod(model, 0); err != nil {
			t.Fatal(err)
		}
		cmd = cliCmd(t, "infer", "--model", model, "--input", raw)
	}
	r := runCmd(t, cmd)
	if r.code != edgecli.ExitModelFile || !strings.Contains(r.stderr, "[model_unreadable]") {
		t.Fatalf("exit %d, stderr %q; want %d [model_unreadable]", r.code, r.stderr, edgecli.ExitModelFile)
	}
}

func TestCLIInferJSON(t *testing.T) {
	r := cli(t, "infer", "--json", "--top", "3", "--threads", "2",
		"--model", tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite"),
		"--input", tflitetest.Path(t, "cat.bmp"),
		"--labels", tflitetest.Path(t, "imagenet_labels.txt"))
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var res edgecli.InferResult
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("decode %s: %v", r.stdout, err)
	}
	if res.Schema != 1 || len(res.Top) != 3 || res.Top[0].Index != 286 || res.Top[0].Label != "Egyptian cat" {
		t.Fatalf("result %+v", res)
	}
	if res.Input.Kind != "image" || len(res.Model.SHA256) != 64 || res.Runtime == "" ||
		res.Stages.FirstInvoke <= 0 || res.Stages.Steady <= 0 || res.Footprint.Mapped != res.Model.Size {
		t.Fatalf("incomplete result %+v", res)
	}
}

func TestCLIGenInspectAndInferRaw(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "gen.tflite")
	if r := cli(t, "models", "gen", "--out", model, "--size", "1MiB"); r.code != 0 {
		t.Fatalf("gen: exit %d %s", r.code, r.stderr)
	}
	r := cli(t, "models", "inspect", "--json", model)
	var info struct {
		Schema int
		Size   int64
		SHA256 string
		Inputs []struct {
			Type  string
			Shape []int
			Bytes int
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || r.code != 0 {
		t.Fatalf("inspect: %v exit %d %s", err, r.code, r.stderr)
	}
	if info.Inputs[0].Type != "float32" || info.Size < 900<<10 || info.Size > 1200<<10 {
		t.Fatalf("inspect %+v", info)
	}
	raw := writeFile(t, filepath.Join(dir, "in.raw"), make([]byte, info.Inputs[0].Bytes), 0o644)
	if r := cli(t, "infer", "--model", model, "--input", raw, "--top", "1"); r.code != 0 || !strings.Contains(r.stdout, "stages (ms)") {
		t.Fatalf("infer raw: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli(t, "version", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"tflite": "2.`) {
		t.Fatalf("version: %s", r.stdout)
	}
}

func TestRunDefaultsUntilSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			cmd, logs, done := startRun(t, dir)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("run exit: %v\n%s", err, logs)
				}
			case <-time.After(time.Minute):
				cmd.Process.Kill()
				t.Fatalf("run did not stop on %v", sig)
			}
			for _, want := range []string{"demo model generated", "model warm", "first_invoke_ms=", "msg=stopped"} {
				if !strings.Contains(logs.String(), want) && !(want == "demo model generated" && sig == syscall.SIGINT) {
					t.Errorf("log lacks %q:\n%s", want, logs)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "state", "models", "demo.tflite")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSIGUSR1Wakes(t *testing.T) {
	dir := t.TempDir()
	cmd, logs, done := startRun(t, dir)
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	logs.waitFor(t, cmd, "msg=plan wake=signal")
	stopRun(t, cmd, logs, done)
}

func TestRunKeepsServingWithABadModel(t *testing.T) {
	dir := t.TempDir()
	orig, err := os.ReadFile(tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	trunc := writeFile(t, filepath.Join(dir, "trunc.tflite"), orig[:len(orig)/2], 0o644)
	cfg := writeFile(t, filepath.Join(dir, "edge-agent.toml"), []byte(`
state_dir = "st"
[pool]
budget = "64MiB"
[[models]]
id = "xor"
path = "`+tflitetest.Path(t, "xor_model.tflite")+`"
pinned = true
[[models]]
id = "broken"
path = "`+trunc+`"
`), 0o644)
	cmd, logs, done := startRun(t, dir, "--config", cfg)
	stopRun(t, cmd, logs, done)
	l := logs.String()
	if !strings.Contains(l, `msg="model not usable" model=broken`) || !strings.Contains(l, "code=model_truncated") || !strings.Contains(l, "warm=1") {
		t.Fatalf("logs:\n%s", l)
	}
}
