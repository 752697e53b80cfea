package agent_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/tflite"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// A client of the Open Inference Protocol (KServe v2 REST), written from
// the spec (github.com/kserve/open-inference-protocol, binary tensor data
// extension as Triton documents it), not from this server's types.
type (
	v2Tensor struct {
		Name       string         `json:"name"`
		Shape      []int64        `json:"shape"`
		Datatype   string         `json:"datatype"`
		Parameters map[string]any `json:"parameters,omitempty"`
		Data       []any          `json:"data,omitempty"`
	}
	v2RequestOutput struct {
		Name       string         `json:"name"`
		Parameters map[string]any `json:"parameters,omitempty"`
	}
	v2InferRequest struct {
		ID         string            `json:"id,omitempty"`
		Parameters map[string]any    `json:"parameters,omitempty"`
		Inputs     []v2Tensor        `json:"inputs"`
		Outputs    []v2RequestOutput `json:"outputs,omitempty"`
	}
	v2InferResponse struct {
		ModelName    string     `json:"model_name"`
		ModelVersion string     `json:"model_version"`
		ID           string     `json:"id"`
		Outputs      []v2Tensor `json:"outputs"`
	}
	v2MetadataTensor struct {
		Name     string  `json:"name"`
		Datatype string  `json:"datatype"`
		Shape    []int64 `json:"shape"`
	}
	v2ModelMetadata struct {
		Name     string             `json:"name"`
		Versions []string           `json:"versions"`
		Platform string             `json:"platform"`
		Inputs   []v2MetadataTensor `json:"inputs"`
		Outputs  []v2MetadataTensor `json:"outputs"`
	}
	v2ServerMetadata struct {
		Name       string   `json:"name"`
		Version    string   `json:"version"`
		Extensions []string `json:"extensions"`
	}
	v2Error struct {
		Error string `json:"error"`
	}
)

const oipModel = "mobilenet_v2_1.0_224_quant"

// catTensor is cat.bmp prepared by the documented image rule into the
// model's UINT8 [1,224,224,3] input.
func catTensor(t *testing.T) []byte {
	t.Helper()
	in, err := infer.FromFile(tflitetest.Path(t, "cat.bmp"), tflite.TensorInfo{Type: "uint8", Shape: []int{1, 224, 224, 3}, Bytes: 224 * 224 * 3},
		infer.DefaultNormalization, 0)
	if err != nil {
		t.Fatal(err)
	}
	return in.Bytes
}

// curl runs curl with args and returns the HTTP status and the body.
func curl(t *testing.T, args ...string) (int, []byte) {
	t.Helper()
	out, err := exec.Command("curl", append([]string{"-sS", "-w", "\n%{http_code}"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	i := bytes.LastIndexByte(out, '\n')
	code, err := strconv.Atoi(string(out[i+1:]))
	if err != nil {
		t.Fatalf("curl %v: no status in %q", args, out)
	}
	return code, out[:i]
}

// The acceptance: curl asks readiness and infers cat.bmp as an image body
// and as a UINT8 tensor, and both answer 286 (Egyptian cat).
func TestOIPWithCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed (Debian: curl)")
	}
	_, base := startOIP(t, mqtttest.FreeAddr(t), nil)
	for _, path := range []string{"/v2/health/live", "/v2/health/ready", "/v2/models/" + oipModel + "/ready"} {
		if code, body := curl(t, base+path); code != 200 {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
	}
	infer := base + "/v2/models/" + oipModel + "/infer"
	code, body := curl(t, "-X", "POST", "-H", "Content-Type: image/bmp", "--data-binary", "@"+tflitetest.Path(t, "cat.bmp"), infer)
	var res v2InferResponse
	if err := json.Unmarshal(body, &res); code != 200 || err != nil || len(res.Outputs) != 1 {
		t.Fatalf("image body: %d %v %.300s", code, err, body)
	}
	if got := argmax(t, res.Outputs[0].Data); got != 286 || res.Outputs[0].Datatype != "UINT8" || res.ModelName != oipModel {
		t.Fatalf("image body answers %d (%s, model %q), want 286", got, res.Outputs[0].Datatype, res.ModelName)
	}

	code, body = curl(t, base+"/v2/models/"+oipModel)
	var mm v2ModelMetadata
	if err := json.Unmarshal(body, &mm); code != 200 || err != nil || len(mm.Inputs) != 1 || len(mm.Outputs) != 1 {
		t.Fatalf("metadata: %d %v %s", code, err, body)
	}
	tensor := catTensor(t)
	data := make([]any, len(tensor))
	for i, v := range tensor {
		data[i] = v
	}
	req, _ := json.Marshal(v2InferRequest{ID: "cat-1", Inputs: []v2Tensor{{Name: mm.Inputs[0].Name, Shape: []int64{1, 224, 224, 3}, Datatype: "UINT8", Data: data}},
		Outputs: []v2RequestOutput{{Name: mm.Outputs[0].Name, Parameters: map[string]any{"classification": 3}}}})
	f := filepath.Join(t.TempDir(), "req.json")
	if err := os.WriteFile(f, req, 0o644); err != nil {
		t.Fatal(err)
	}
	code, body = curl(t, "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@"+f, infer)
	res = v2InferResponse{}
	if err := json.Unmarshal(body, &res); code != 200 || err != nil || len(res.Outputs) != 1 || len(res.Outputs[0].Data) != 3 {
		t.Fatalf("UINT8 tensor: %d %v %.300s", code, err, body)
	}
	// The classification extension: "score:index:label", best first.
	if top, _ := res.Outputs[0].Data[0].(string); res.ID != "cat-1" || res.Outputs[0].Datatype != "BYTES" || !strings.Contains(top, ":286:") {
		t.Fatalf("UINT8 tensor: id %q, classes %v (%s), want 286 first", res.ID, res.Outputs[0].Data, res.Outputs[0].Datatype)
	}
}

// A Go client written against the spec: server and model metadata, the
// binary tensor extension both ways, and the error statuses.
func TestOIPGoClient(t *testing.T) {
	broken := writeFile(t, filepath.Join(t.TempDir(), "broken.tflite"), bytes.Repeat([]byte("not a model "), 100), 0o644)
	_, base := startOIP(t, mqtttest.FreeAddr(t), func(c *agent.Config) {
		c.Models = append(c.Models, agent.ModelConfig{ID: "broken", Path: broken})
	})
	get := func(path string, v any) int {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %d, body is not JSON: %v", path, resp.StatusCode, err)
		}
		return resp.StatusCode
	}
	var sm v2ServerMetadata
	if code := get("/v2", &sm); code != 200 || sm.Name == "" || !strings.Contains(strings.Join(sm.Extensions, ","), "binary_tensor_data") {
		t.Fatalf("server metadata: %d %+v", code, sm)
	}
	file, err := os.ReadFile(tflitetest.Path(t, oipModel+".tflite"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(file)
	digest := hex.EncodeToString(sum[:])
	var mm v2ModelMetadata
	if code := get("/v2/models/"+oipModel, &mm); code != 200 || mm.Name != oipModel || len(mm.Versions) != 1 || mm.Versions[0] != digest ||
		len(mm.Inputs) != 1 || mm.Inputs[0].Datatype != "UINT8" || fmt.Sprint(mm.Inputs[0].Shape) != "[1 224 224 3]" ||
		len(mm.Outputs) != 1 || fmt.Sprint(mm.Outputs[0].Shape) != "[1 1001]" {
		t.Fatalf("model metadata: %d %+v", code, mm)
	}
	var vm v2ModelMetadata
	if code := get("/v2/models/"+oipModel+"/versions/"+digest, &vm); code != 200 || vm.Name != oipModel {
		t.Fatalf("version metadata: %d %+v", code, vm)
	}
	// Health answers are the status alone: 200 true, 4xx false.
	for path, want := range map[string]int{"/v2/health/live": 200, "/v2/health/ready": 200, "/v2/models/" + oipModel + "/ready": 200,
		"/v2/models/" + oipModel + "/versions/" + digest + "/ready": 200, "/v2/models/broken/ready": 400} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	var e v2Error
	for path, want := range map[string]int{"/v2/models/nope": 404, "/v2/models/nope/ready": 404,
		"/v2/models/" + oipModel + "/versions/" + strings.Repeat("0", 64): 404} {
		if e = (v2Error{}); get(path, &e) != want || e.Error == "" {
			t.Fatalf("GET %s: want %d with an error message, got %+v", path, want, e)
		}
	}

	// Binary tensor data: the JSON header, then the input's bytes; the
	// output asked for as binary comes back after the response header.
	post := func(path string, hdr map[string]string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+path, bytes.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, b
	}
	tensor := catTensor(t)
	head, _ := json.Marshal(v2InferRequest{Inputs: []v2Tensor{{Name: mm.Inputs[0].Name, Shape: []int64{1, 224, 224, 3}, Datatype: "UINT8",
		Parameters: map[string]any{"binary_data_size": len(tensor)}}},
		Outputs: []v2RequestOutput{{Name: mm.Outputs[0].Name, Parameters: map[string]any{"binary_data": true}}}})
	resp, body := post("/v2/models/"+oipModel+"/infer", map[string]string{"Inference-Header-Content-Length": strconv.Itoa(len(head)),
		"Content-Type": "application/octet-stream"}, append(head, tensor...))
	n, err := strconv.Atoi(resp.Header.Get("Inference-Header-Content-Length"))
	if resp.StatusCode != 200 || err != nil || n > len(body) {
		t.Fatalf("binary infer: %d, header length %q: %.300s", resp.StatusCode, resp.Header.Get("Inference-Header-Content-Length"), body)
	}
	var res v2InferResponse
	if err := json.Unmarshal(body[:n], &res); err != nil || len(res.Outputs) != 1 || res.ModelVersion != digest {
		t.Fatalf("binary infer header: %v %s", err, body[:n])
	}
	size, _ := res.Outputs[0].Parameters["binary_data_size"].(float64)
	scores := body[n:]
	if int(size) != len(scores) || len(scores) != 1001 {
		t.Fatalf("binary output: binary_data_size %v, %d bytes follow, want 1001", size, len(scores))
	}
	best := 0
	for i, v := range scores {
		if v > scores[best] {
			best = i
		}
	}
	if best != 286 {
		t.Fatalf("binary infer answers %d, want 286", best)
	}

	// Errors: the agent's codes mapped to statuses, as {"error": "..."}.
	bmp := readShared(t, "cat.bmp")
	wrongShape, _ := json.Marshal(v2InferRequest{Inputs: []v2Tensor{{Name: mm.Inputs[0].Name, Shape: []int64{1, 2}, Datatype: "UINT8", Data: []any{1, 2}}}})
	huge := make([]byte, 2<<20)
	copy(huge, "BM")
	for _, c := range []struct {
		name, path, ctype string
		body              []byte
		want              int
	}{
		{"unknown model", "/v2/models/nope/infer", "image/bmp", bmp, 404},
		{"wrong shape", "/v2/models/" + oipModel + "/infer", "application/json", wrongShape, 400},
		{"not JSON", "/v2/models/" + oipModel + "/infer", "application/json", []byte("{"), 400},
		{"not an image", "/v2/models/" + oipModel + "/infer", "image/png", []byte("hello"), 400},
		{"over max_payload", "/v2/models/" + oipModel + "/infer", "image/bmp", huge, 413},
	} {
		resp, body := post(c.path, map[string]string{"Content-Type": c.ctype}, c.body)
		var e v2Error
		if err := json.Unmarshal(body, &e); resp.StatusCode != c.want || err != nil || e.Error == "" {
			t.Errorf("%s: %d %s, want %d with {\"error\": ...}", c.name, resp.StatusCode, body, c.want)
		}
	}

	// The same metrics as MQTT, with the transport; promtool lints them.
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte(`edge_agent_request_duration_seconds_count{model="`+oipModel+`",transport="http",warm="true"} 1`)) {
		t.Fatalf("/metrics does not count the one answered HTTP request by transport:\n%s", grepLines(metrics, "request_duration_seconds_count"))
	}
	promtoolCheck(t, metrics)
}

func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// On every interface, the listener wants the token: anonymous and wrong
// tokens get 401 (connecting over loopback; no traffic leaves the host).
func TestOIPTokenOffLoopback(t *testing.T) {
	_, port, _ := net.SplitHostPort(mqtttest.FreeAddr(t))
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, base := startOIP(t, "0.0.0.0:"+port, func(c *agent.Config) { c.HTTP.TokenFile = token })
	for _, path := range []string{"/v2/health/ready", "/v2/models/" + oipModel + "/ready", "/metrics"} {
		for _, auth := range []string{"", "Bearer wrong", "Bearer s3cret-toke", "s3cret-token"} {
			var args []string
			if auth != "" {
				args = []string{"-H", "Authorization: " + auth}
			}
			if code, body := curl(t, append(args, base+path)...); code != 401 {
				t.Fatalf("GET %s with %q: %d %s, want 401", path, auth, code, body)
			}
		}
		if code, body := curl(t, "-H", "Authorization: Bearer s3cret-token", base+path); code != 200 {
			t.Fatalf("GET %s with the token: %d %s", path, code, body)
		}
	}
	code, body := curl(t, "-X", "POST", "-H", "Content-Type: image/bmp", "--data-binary", "@"+tflitetest.Path(t, "cat.bmp"),
		base+"/v2/models/"+oipModel+"/infer")
	if code != 401 {
		t.Fatalf("anonymous infer: %d %s, want 401", code, body)
	}
}

// The configuration refuses a non-loopback listen without a token unless
// anonymous access is explicit.
func TestHTTPListenNeedsToken(t *testing.T) {
	for _, c := range []struct {
		listen, token string
		anon, ok      bool
	}{
		{"127.0.0.1:9464", "", false, true},
		{"localhost:9464", "", false, true},
		{"[::1]:9464", "", false, true},
		{"0.0.0.0:9464", "", false, false},
		{":9464", "", false, false},
		{"192.168.1.5:9464", "", false, false},
		{"0.0.0.0:9464", "/etc/edge-agent/http-token", false, true},
		{"0.0.0.0:9464", "", true, true},
	} {
		cfg := agent.DefaultConfig()
		cfg.HTTP = agent.HTTPConfig{Listen: c.listen, TokenFile: c.token, AllowAnonymous: c.anon}
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: Validate() = %v, want ok %v", c, err, c.ok)
		}
		cfg = agent.DefaultConfig()
		cfg.Metrics.Listen = c.listen // the old name follows the same rule
		if err := cfg.Validate(); c.token == "" && !c.anon && (err == nil) != c.ok {
			t.Errorf("metrics.listen %q: Validate() = %v, want ok %v", c.listen, err, c.ok)
		}
	}
}
