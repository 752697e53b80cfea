package agent_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/edge-agent/edge-agent/agent"
	edgecli "github.com/edge-agent/edge-agent/agent/cli"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// `edge-agent call` talks to a running agent over a real mosquitto:
// status, infer with an image as a binary payload, and rollback, with the
// agent's error codes as exit statuses.
func TestCallCommand(t *testing.T) {
	v1, v2 := readShared(t, "mobilenet_v1_0.25_128_quant.tflite"), readShared(t, "mobilenet_v2_1.0_224_quant.tflite")
	broker := mqtttest.Start(t, mqtttest.Options{})
	path := t.TempDir() + "/cls.tflite"
	replaceFile(t, path, v1)
	cfg := testConfig(t, agent.ModelConfig{ID: "cls", Path: path, AllowSignatureChange: true,
		Labels: tflitetest.Path(t, "imagenet_labels.txt")})
	cfg.MQTT.Brokers, cfg.MQTT.Device = []string{broker.URL()}, "dev1"
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	call := func(args ...string) result {
		t.Helper()
		return cli(t, append([]string{"call"}, append(args, "--broker", broker.URL(), "--device", "dev1")...)...)
	}

	r := call("status", "--json")
	var st struct {
		OK     bool
		Result struct{ Device string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil || !st.OK || st.Result.Device != "dev1" {
		t.Fatalf("call status: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	grace := tflitetest.Path(t, "grace_hopper.bmp")
	r = call("infer", "--model", "cls", "--image", grace)
	if r.code != 0 || !strings.Contains(r.stdout, `"top"`) {
		t.Fatalf("call infer: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	firstIndex := func(out string) int {
		var rep agent.InferReply
		if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Top) == 0 {
			t.Fatalf("infer output %q: %v", out, err)
		}
		return rep.Top[0].Index
	}
	fromV1 := firstIndex(r.stdout)
	// --top goes as JSON (base64, a third larger than the file).
	if r := call("infer", "--model", "cls", "--image", tflitetest.Path(t, "bird.bmp"), "--top", "1"); r.code != 0 || strings.Count(r.stdout, `"index"`) != 1 {
		t.Fatalf("call infer --top 1: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	if r := call("rollback", "--model", "cls"); r.code != edgecli.ExitFailure || !strings.Contains(r.stderr, "no_previous_version") {
		t.Fatalf("rollback with nothing to roll back to: exit %d\n%s", r.code, r.stderr)
	}
	replaceFile(t, path, v2)
	if r := call("rescan"); r.code != 0 {
		t.Fatalf("call rescan: exit %d\n%s", r.code, r.stderr)
	}
	// Events go to the broker here (the outbox empties): wait for v2's answer.
	waitFor(t, "v2 serves", func() bool { return top1(t, a, "cls", readShared(t, "grace_hopper.bmp")) == 653 })
	if r := call("rollback", "--model", "cls", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"rollback": true`) {
		t.Fatalf("call rollback: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := call("infer", "--model", "cls", "--image", grace); firstIndex(r.stdout) != fromV1 {
		t.Fatalf("after the rollback:\n%s\nwant v1's answer %d", r.stdout, fromV1)
	}

	if r := call("infer", "--model", "cls", "--image", tflitetest.Path(t, "xor_model.tflite")); r.code != edgecli.ExitInput {
		t.Fatalf("infer of a non-image as an image: exit %d, want %d\n%s", r.code, edgecli.ExitInput, r.stderr)
	}
	if r := call("fly"); r.code != edgecli.ExitUsage {
		t.Fatalf("unknown verb: exit %d", r.code)
	}
	if r := call("set-budget", "96MiB"); r.code != 0 || a.Pool().Stats().Budget != 96<<20 {
		t.Fatalf("call set-budget 96MiB: exit %d, budget %d\n%s", r.code, a.Pool().Stats().Budget, r.stderr)
	}
}
