package agent_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// With no broker configured the agent serves MQTT itself on local_listen,
// and `edge-agent call` finds it from the same configuration: status, the
// right class for cat.bmp from a classifier, and deeplab's segmentation
// map (its output tensor, not a top-K of pixels) with the cat in it.
func TestLocalBrokerByDefault(t *testing.T) {
	addr := mqtttest.FreeAddr(t)
	cfg := testConfig(t, agent.ModelConfig{ID: "v2", Path: tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite"), Labels: tflitetest.Path(t, "imagenet_labels.txt")},
		agent.ModelConfig{ID: "deeplab", Path: tflitetest.Path(t, "deeplabv3_mnv2_pascal_quant.tflite")})
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
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil || len(rep.Top) != 1 || rep.Top[0].Index != 286 || len(rep.Outputs) != 0 {
		t.Fatalf("call infer cat.bmp: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	r = call("infer", "--model", "deeplab", "--image", tflitetest.Path(t, "cat.bmp"))
	rep = agent.InferReply{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil {
		t.Fatalf("call infer deeplab: exit %d %v\n%.500s%s", r.code, err, r.stdout, r.stderr)
	}
	checkCatSegmentation(t, rep)
}

// checkCatSegmentation: deeplab's one output, int64 [1 513 513], PASCAL
// VOC classes, with the cat (8) covering much of cat.bmp.
func checkCatSegmentation(t *testing.T, rep agent.InferReply) {
	t.Helper()
	if len(rep.Top) != 0 || len(rep.Outputs) != 1 {
		t.Fatalf("deeplab answered top %v and %d outputs, want its one output tensor", rep.Top, len(rep.Outputs))
	}
	o := rep.Outputs[0]
	if o.Type != "int64" || !slices.Equal(o.Shape, []int{1, 513, 513}) || len(o.Data) != 8*513*513 {
		t.Fatalf("deeplab output %s %s %v, %d bytes", o.Name, o.Type, o.Shape, len(o.Data))
	}
	cat := 0
	for i := 0; i < len(o.Data); i += 8 {
		v := int64(binary.LittleEndian.Uint64(o.Data[i:]))
		if v < 0 || v > 20 {
			t.Fatalf("pixel %d: class %d, not a PASCAL VOC class", i/8, v)
		}
		if v == 8 {
			cat++
		}
	}
	if cat < 513*513/10 {
		t.Fatalf("cat (8) on %d of %d pixels of cat.bmp", cat, 513*513)
	}
}

// Over the MQTT command itself, the same: deeplab's map, and top-K for a
// classifier.
func TestInferAnswersFitTheModel(t *testing.T) {
	cfg := testConfig(t, agent.ModelConfig{ID: "deeplab", Path: tflitetest.Path(t, "deeplabv3_mnv2_pascal_quant.tflite")},
		agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")})
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	ask := func(model string) agent.InferReply {
		t.Helper()
		payload, _ := json.Marshal(map[string]any{"model": model, "image": readShared(t, "cat.bmp")})
		res, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", ID: "i", Payload: payload})
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		return res.(agent.InferReply)
	}
	checkCatSegmentation(t, ask("deeplab"))
	if rep := ask("v1"); len(rep.Top) != 5 || rep.Top[0].Index != 286 || len(rep.Outputs) != 0 {
		t.Fatalf("classifier: top %v, %d outputs", rep.Top, len(rep.Outputs))
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

// On a local broker beyond loopback (0.0.0.0, reached through 127.0.0.1),
// the configuration must say who gets in: without a users file it does
// not start, unless anonymous access is asked for (and status says so).
// With one (and TLS), a read-only user's command never runs (its call
// gets no answer and the budget stays), a command user's does, and the
// agent reaches its own broker with its own login.
func TestLocalBrokerBeyondLoopbackAdmitsByRole(t *testing.T) {
	_, port, _ := strings.Cut(mqtttest.FreeAddr(t), ":")
	cfg := testConfig(t, agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	cfg.MQTT.LocalListen = "0.0.0.0:" + port
	cfg.MQTT.Device = "dev-auth"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "local_users_file") {
		t.Fatalf("an open broker beyond loopback passed validation: %v", err)
	}

	open := cfg
	open.MQTT.LocalAllowAnonymous = true
	a := start(t, open, agent.Options{})
	if lb := a.Status().LocalBroker; lb == nil || lb.Auth != "anonymous" || !lb.AnonymousAllowed {
		t.Fatalf("status with local_allow_anonymous: %+v", lb)
	}
	a.Close()

	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"ha", "grafana"} {
		if out, err := exec.Command("mosquitto_passwd", "-b", users, u, u+"-pw").CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v %s", err, out)
		}
		if err := os.WriteFile(filepath.Join(dir, u), []byte(u+"-pw\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.MQTT.LocalUsersFile = users
	cfg.MQTT.LocalACL = map[string]string{"ha": "command", "grafana": "read"}
	ca, cert, key := mqtttest.WriteCerts(t, dir)
	cfg.MQTT.LocalCertFile, cfg.MQTT.LocalKeyFile = cert, key
	a = start(t, cfg, agent.Options{})
	defer a.Close()
	if !a.Report().BrokerConnected {
		t.Fatal("the agent did not connect to its own broker")
	}
	if lb := a.Status().LocalBroker; lb == nil || lb.Auth != "password" || lb.AnonymousAllowed || !lb.TLS {
		t.Fatalf("status: %+v", lb)
	}
	budget := a.Pool().Stats().Budget
	call := func(user, verb, payload string) (mqtt.CallReply, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		o := mqtt.Options{Brokers: []string{"ssl://127.0.0.1:" + port}, CAFile: ca, Device: "dev-auth", ConnectTimeout: 2 * time.Second}
		if user != "" {
			o.Username, o.PasswordFile = user, filepath.Join(dir, user)
		}
		return mqtt.Call(ctx, o, verb, "", []byte(payload), false)
	}
	for _, user := range []string{"", "grafana"} {
		if r, err := call(user, "set-budget", `{"budget":"7MiB"}`); err == nil {
			t.Fatalf("user %q commanded set-budget: %+v", user, r)
		}
	}
	r, err := call("ha", "status", `{}`)
	if err != nil || !r.OK {
		t.Fatalf("command user's status: %+v %v", r, err)
	}
	if got := a.Pool().Stats().Budget; got != budget {
		t.Fatalf("budget %d after the refused commands, was %d", got, budget)
	}
	if r, err := call("ha", "set-budget", `{"budget":"9MiB"}`); err != nil || !r.OK || a.Pool().Stats().Budget != 9<<20 {
		t.Fatalf("command user's set-budget: %+v %v, budget %d", r, err, a.Pool().Stats().Budget)
	}
}
