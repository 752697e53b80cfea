package agent_test

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// With no broker configured the agent serves MQTT itself on local_listen,
// and `edge-agent call` finds it from the same configuration: status, and
// the right class for cat.bmp.
func TestLocalBrokerByDefault(t *testing.T) {
	addr := freeAddr(t)
	cfg := testConfig(t, agent.ModelConfig{ID: "v2", Path: tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite"), Labels: tflitetest.Path(t, "imagenet_labels.txt")})
	cfg.MQTT.LocalListen = addr
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	if !a.Report().BrokerConnected {
		t.Fatal("the agent did not connect to its own broker")
	}
	conf := filepath.Join(t.TempDir(), "call.toml")
	if err := os.WriteFile(conf, []byte("[mqtt]\nlocal_listen = \""+addr+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	call := func(args ...string) result {
		t.Helper()
		cmd := exec.Command(os.Args[0], append([]string{"call"}, append(args, "--config", conf)...)...)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "EDGE_AGENT_MQTT_LOCAL_LISTEN=") { // the test-wide "off"
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "EDGE_AGENT_TEST_CLI=1")
		return runCmd(t, cmd)
	}
	r := call("status", "--json")
	var st struct {
		OK     bool
		Result struct{ Device string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil || !st.OK || st.Result.Device == "" {
		t.Fatalf("call status: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	r = call("infer", "--model", "v2", "--image", tflitetest.Path(t, "cat.bmp"), "--top", "1")
	var rep agent.InferReply
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil || len(rep.Top) != 1 || rep.Top[0].Index != 286 {
		t.Fatalf("call infer cat.bmp: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
}

// When something already listens on local_listen (a mosquitto serving Home
// Assistant), the agent connects to it as a client: its retained status
// is there.
func TestLocalListenTakenUsesThatBroker(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	cfg := testConfig(t, agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	cfg.MQTT.LocalListen = strings.TrimPrefix(b.URL(), "tcp://")
	cfg.MQTT.Device = "dev-local"
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	sub := b.Subscribe(t, "watcher", "edge/dev-local/status")
	got := sub.Next(t, 10*time.Second)
	if !got.Retained || !strings.Contains(string(got.Payload), `"online"`) {
		t.Fatalf("status on the existing broker: %+v %s", got, got.Payload)
	}
}
