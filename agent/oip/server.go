package oip

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// Options configure the handler; the zero value of each field is its
// default.
type Options struct {
	Backend Backend
	// Token, when set, is required of every request as
	// "Authorization: Bearer TOKEN" (compared in constant time).
	Token []byte
	// MaxBody bounds a request body (the agent's mqtt.max_payload, so both
	// transports take the same). Default 1 MiB.
	MaxBody int64
	// MaxInFlight bounds concurrent infer requests; more are refused with
	// 503 (the memory they may hold is MaxInFlight × MaxBody). Default 8.
	MaxInFlight int
	// Extra routes served beside /v2 behind the same auth (e.g. "/metrics").
	Extra map[string]http.Handler
	// Name and Version answer GET /v2.
	Name, Version string
	Log           *slog.Logger
}

// headerLength is the binary tensor data extension's header.
const headerLength = "Inference-Header-Content-Length"

type server struct {
	o     Options
	slots chan struct{}
}

// Handler serves the protocol's REST routes under /v2.
func Handler(o Options) http.Handler {
	if o.MaxBody <= 0 {
		o.MaxBody = 1 << 20
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 8
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &server{o: o, slots: make(chan struct{}, o.MaxInFlight)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/health/live", s.live)
	mux.HandleFunc("GET /v2/health/ready", s.ready)
	mux.HandleFunc("GET /v2", s.serverMeta)
	mux.HandleFunc("GET /v2/models/{name}", s.modelMeta)
	mux.HandleFunc("GET /v2/models/{name}/versions/{version}", s.modelMeta)
	mux.HandleFunc("GET /v2/models/{name}/ready", s.modelReady)
	mux.HandleFunc("GET /v2/models/{name}/versions/{version}/ready", s.modelReady)
	mux.HandleFunc("POST /v2/models/{name}/infer", s.infer)
	mux.HandleFunc("POST /v2/models/{name}/versions/{version}/infer", s.infer)
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
	})
	for path, h := range o.Extra {
		mux.Handle(path, h)
	}
	if len(o.Token) == 0 {
		return mux
	}
	return requireToken(o.Token, mux)
}

// health answers a health request as the protocol says: the status is the
// answer (200 true, 400 false) and the body is empty.
func health(w http.ResponseWriter, ok bool) {
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *server) live(w http.ResponseWriter, _ *http.Request) { health(w, s.o.Backend.Live()) }

func (s *server) ready(w http.ResponseWriter, _ *http.Request) { health(w, s.o.Backend.Ready()) }

func (s *server) serverMeta(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"name": s.o.Name, "version": s.o.Version,
		"extensions": []string{"binary_tensor_data", "classification"}})
}

// model finds the request's model and checks its version; it answers 404
// itself when either is unknown.
func (s *server) model(w http.ResponseWriter, r *http.Request) (Model, string, bool) {
	name, version := r.PathValue("name"), r.PathValue("version")
	m, ok := s.o.Backend.Model(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown model %q", name))
		return m, "", false
	}
	if version != "" && !contains(m.Versions, version) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q has no version %q (kept: %v)", name, version, m.Versions))
		return m, "", false
	}
	return m, version, true
}

func (s *server) modelMeta(w http.ResponseWriter, r *http.Request) {
	m, _, ok := s.model(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": m.Name, "versions": nonNil(m.Versions), "platform": "tensorflow_lite",
		"inputs": nonNil(m.Inputs), "outputs": nonNil(m.Outputs)})
}

func (s *server) modelReady(w http.ResponseWriter, r *http.Request) {
	m, version, ok := s.model(w, r)
	if !ok {
		return
	}
	health(w, s.o.Backend.ModelReady(m.Name, version))
}

// The protocol's inference request and response (REST).
type (
	inferRequest struct {
		ID         string          `json:"id,omitempty"`
		Parameters map[string]any  `json:"parameters,omitempty"`
		Inputs     []requestInput  `json:"inputs"`
		Outputs    []requestOutput `json:"outputs,omitempty"`
	}
	requestInput struct {
		Name       string          `json:"name"`
		Shape      []int64         `json:"shape"`
		Datatype   string          `json:"datatype"`
		Parameters map[string]any  `json:"parameters,omitempty"`
		Data       json.RawMessage `json:"data,omitempty"`
	}
	requestOutput struct {
		Name       string         `json:"name"`
		Parameters map[string]any `json:"parameters,omitempty"`
	}
	inferResponse struct {
		ModelName    string           `json:"model_name"`
		ModelVersion string           `json:"model_version,omitempty"`
		ID           string           `json:"id,omitempty"`
		Outputs      []responseOutput `json:"outputs"`
	}
	responseOutput struct {
		Name       string          `json:"name"`
		Shape      []int64         `json:"shape"`
		Datatype   string          `json:"datatype"`
		Parameters map[string]any  `json:"parameters,omitempty"`
		Data       json.RawMessage `json:"data,omitempty"`
	}
)

func (s *server) infer(w http.ResponseWriter, r *http.Request) {
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("busy: %d requests in flight; retry later", cap(s.slots)))
		return
	}
	m, version, ok := s.model(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.o.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("payload_too_large: body over %d bytes (mqtt.max_payload)", s.o.MaxBody))
			return
		}
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if strings.HasPrefix(ct, "image/") {
		res, err := s.o.Backend.Infer(r.Context(), Request{Model: m.Name, Version: version, Image: body})
		if err != nil {
			s.fail(w, err)
			return
		}
		s.respond(w, inferRequest{}, res, nil)
		return
	}
	req, binData, err := parseInfer(r.Header.Get(headerLength), body)
	if err != nil {
		s.fail(w, err)
		return
	}
	q, want, err := prepare(m, req, binData)
	if err != nil {
		s.fail(w, err)
		return
	}
	q.Version = version
	res, err := s.o.Backend.Infer(r.Context(), q)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.respond(w, req, res, want)
}

// parseInfer splits a body into the JSON request and, with the binary
// extension, the binary data that follows it.
func parseInfer(hdr string, body []byte) (inferRequest, []byte, error) {
	var req inferRequest
	js, bin := body, []byte(nil)
	if hdr != "" {
		n, err := strconv.Atoi(hdr)
		if err != nil || n < 0 || n > len(body) {
			return req, nil, badRequest(fmt.Sprintf("%s %q: want the JSON header's length, at most the body's %d bytes", headerLength, hdr, len(body)))
		}
		js, bin = body[:n], body[n:]
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, nil, badRequest("inference request JSON: " + err.Error())
	}
	return req, bin, nil
}

// prepare checks the request against the model's inputs and reads its one
// input tensor; want are the outputs asked for (nil: all, as JSON).
func prepare(m Model, req inferRequest, bin []byte) (Request, []requestOutput, error) {
	q := Request{Model: m.Name}
	if len(req.Inputs) != 1 || len(m.Inputs) != 1 {
		return q, nil, badRequest(fmt.Sprintf("model %q takes %d input(s); this server feeds models with one input, got %d", m.Name, len(m.Inputs), len(req.Inputs)))
	}
	in, meta := req.Inputs[0], m.Inputs[0]
	if in.Name != meta.Name {
		return q, nil, badRequest(fmt.Sprintf("input %q: the model's input is %q", in.Name, meta.Name))
	}
	if in.Datatype != meta.Datatype {
		return q, nil, badRequest(fmt.Sprintf("input %q: datatype %s, the model takes %s", in.Name, in.Datatype, meta.Datatype))
	}
	n, err := elements(in.Shape)
	if err != nil {
		return q, nil, err
	}
	if want, _ := elements(meta.Shape); n != want {
		return q, nil, badRequest(fmt.Sprintf("input %q: shape %v has %d elements, the model's %v has %d", in.Name, in.Shape, n, meta.Shape, want))
	}
	if size, ok := in.Parameters["binary_data_size"]; ok {
		sz, ok := size.(float64)
		if !ok || sz < 0 || int(sz) != len(bin) {
			return q, nil, badRequest(fmt.Sprintf("input %q: binary_data_size %v, but %d bytes follow the JSON header", in.Name, size, len(bin)))
		}
		if len(in.Data) != 0 {
			return q, nil, badRequest(fmt.Sprintf("input %q: both data and binary_data_size", in.Name))
		}
		if int64(len(bin)) != n*int64(elemSize(in.Datatype)) {
			return q, nil, badRequest(fmt.Sprintf("input %q: %d binary bytes, the shape takes %d", in.Name, len(bin), n*int64(elemSize(in.Datatype))))
		}
		q.Tensor = bin
	} else {
		if len(bin) != 0 {
			return q, nil, badRequest("binary data follows the JSON header but no input has binary_data_size")
		}
		if len(in.Data) == 0 {
			return q, nil, badRequest(fmt.Sprintf("input %q has no data", in.Name))
		}
		if q.Tensor, err = fromJSON(in.Data, in.Datatype, n); err != nil {
			return q, nil, err
		}
	}
	for _, o := range req.Outputs {
		if !hasOutput(m.Outputs, o.Name) {
			return q, nil, badRequest(fmt.Sprintf("output %q: the model's outputs are %v", o.Name, m.Outputs))
		}
		if c, ok := o.Parameters["classification"]; ok {
			k, ok := c.(float64)
			if !ok || k < 1 || k > 100 || k != float64(int(k)) {
				return q, nil, badRequest(fmt.Sprintf("output %q: classification %v, want 1..100", o.Name, c))
			}
			q.Classes = int(k)
		}
	}
	return q, req.Outputs, nil
}

// respond writes the response: every output unless some were asked for;
// outputs asked for with binary_data (or all, with the request parameter
// binary_data_output) go after the JSON header.
func (s *server) respond(w http.ResponseWriter, req inferRequest, res Response, want []requestOutput) {
	allBinary, _ := req.Parameters["binary_data_output"].(bool)
	out := inferResponse{ModelName: res.Model, ModelVersion: res.Version, ID: req.ID, Outputs: []responseOutput{}}
	var bin [][]byte
	for _, t := range res.Outputs {
		asked, asBinary, classes := len(want) == 0, allBinary, 0
		for _, o := range want {
			if o.Name == t.Name {
				asked = true
				if b, ok := o.Parameters["binary_data"].(bool); ok {
					asBinary = b
				}
				if c, ok := o.Parameters["classification"].(float64); ok {
					classes = int(c)
				}
			}
		}
		if !asked {
			continue
		}
		ro := responseOutput{Name: t.Name, Shape: t.Shape, Datatype: t.Datatype}
		data := t.Data
		if classes > 0 {
			// The classification extension: BYTES "score:index[:label]".
			ro.Datatype = "BYTES"
			ro.Shape = append(append([]int64{}, t.Shape[:max(len(t.Shape)-1, 0)]...), int64(len(res.Top)))
			strs := make([]string, len(res.Top))
			data = nil
			for i, c := range res.Top {
				strs[i] = strconv.FormatFloat(float64(c.Score), 'g', -1, 32) + ":" + strconv.Itoa(c.Index)
				if c.Label != "" {
					strs[i] += ":" + c.Label
				}
				data = binary.LittleEndian.AppendUint32(data, uint32(len(strs[i])))
				data = append(data, strs[i]...)
			}
			if !asBinary {
				ro.Data, _ = json.Marshal(strs)
			}
		} else if !asBinary {
			js, err := toJSON(data, t.Datatype)
			if err != nil {
				s.fail(w, &Error{"internal", err.Error()})
				return
			}
			ro.Data = js
		}
		if asBinary {
			ro.Parameters = map[string]any{"binary_data_size": len(data)}
			bin = append(bin, data)
		}
		out.Outputs = append(out.Outputs, ro)
	}
	if len(bin) == 0 {
		writeJSON(w, http.StatusOK, out)
		return
	}
	js, err := json.Marshal(out)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(headerLength, strconv.Itoa(len(js)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(js)
	for _, b := range bin {
		_, _ = w.Write(b)
	}
}

// fail answers err with its code's status and {"error": "..."}.
func (s *server) fail(w http.ResponseWriter, err error) {
	c := code(err)
	st := StatusOf(c)
	if st == http.StatusInternalServerError {
		s.o.Log.Error("oip: request failed", "code", c, "err", err)
	}
	writeError(w, st, err.Error()+" ["+c+"]")
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func hasOutput(ts []TensorMeta, name string) bool {
	for _, t := range ts {
		if t.Name == name {
			return true
		}
	}
	return false
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
