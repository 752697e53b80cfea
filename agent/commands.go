package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/tflite"
)

// Command errors; tflite's kinds (unknown_model, input_size, over_budget,
// model_pinned, model_busy, ...) pass through with their own codes.
var (
	ErrBadCommand  = tflite.NewKind("bad_request", "malformed command")
	ErrBadModelID  = tflite.NewKind("bad_model_id", "model id is not an id (letters, digits, '.', '_', '-'; no paths)")
	ErrUnknownVerb = tflite.NewKind("unknown_verb", "unknown command")
)

type commandError struct {
	kind   *tflite.Kind
	detail string
}

func (e *commandError) Error() string { return e.kind.Error() + ": " + e.detail }
func (e *commandError) Unwrap() error { return e.kind }

func badCommand(format string, a ...any) error {
	return &commandError{ErrBadCommand, fmt.Sprintf(format, a...)}
}

// Verbs lists the commands the agent answers.
// "rescan" looks at the models again (models_dir, changed files); "reload"
// is its old name, kept as an alias (SIGHUP, not a command, reloads the
// configuration).
var Verbs = []string{"status", "prewarm", "evict", "pin", "unpin", "infer", "rescan", "reload", "set-budget", "wake"}

// Command runs one MQTT command (mqtt.Commander).
func (a *Agent) Command(ctx context.Context, c mqtt.Command) (any, error) {
	if c.Binary && c.Verb != "infer" {
		return nil, badCommand("%s takes a JSON payload", c.Verb)
	}
	switch c.Verb {
	case "status":
		if err := decodeStrict(c.Payload, &struct{ envelope }{}); err != nil {
			return nil, err
		}
		return a.Status(), nil
	case "prewarm", "evict", "pin", "unpin":
		var req struct {
			envelope
			Model string `json:"model"`
		}
		if err := decodeStrict(c.Payload, &req); err != nil {
			return nil, err
		}
		if err := checkModelID(req.Model); err != nil {
			return nil, err
		}
		return a.modelCommand(ctx, c.Verb, req.Model)
	case "infer":
		return a.inferCommand(ctx, c)
	case "set-budget":
		var req struct {
			envelope
			Budget json.RawMessage `json:"budget"`
		}
		if err := decodeStrict(c.Payload, &req); err != nil {
			return nil, err
		}
		return a.setBudget(req.Budget)
	case "rescan", "reload":
		if err := decodeStrict(c.Payload, &struct{ envelope }{}); err != nil {
			return nil, err
		}
		return a.rescan()
	case "wake":
		if err := decodeStrict(c.Payload, &struct{ envelope }{}); err != nil {
			return nil, err
		}
		res, err := a.Wake(ctx, "command")
		if err != nil {
			return nil, err
		}
		return res, nil
	}
	return nil, &commandError{ErrUnknownVerb, fmt.Sprintf("%q (known: %v)", c.Verb, Verbs)}
}

// envelope is what every JSON command may carry besides its fields.
type envelope struct {
	Schema int    `json:"schema"`
	ID     string `json:"id"`
}

// decodeStrict decodes one JSON object into v, refusing unknown fields,
// trailing data and unknown schema versions. An empty payload is {}.
func decodeStrict(payload []byte, v any) error {
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badCommand("%v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badCommand("trailing data after the JSON object")
	}
	var env struct {
		Schema int `json:"schema"`
	}
	_ = json.Unmarshal(payload, &env)
	if env.Schema != 0 && env.Schema != SchemaVersion {
		return badCommand("schema %d not supported (want %d)", env.Schema, SchemaVersion)
	}
	return nil
}

func checkModelID(id string) error {
	if id == "" {
		return badCommand("model is required")
	}
	if !ValidModelID(id) {
		return &commandError{ErrBadModelID, fmt.Sprintf("%q", id)}
	}
	return nil
}

// Status is the reply to "status".
type Status struct {
	Agent   string               `json:"agent"`
	Device  string               `json:"device"`
	UptimeS float64              `json:"uptime_s"`
	Models  []tflite.ModelStatus `json:"models"`
	// Readiness is what each configured model may be asked now (failed
	// ones, which the pool does not hold, included).
	Readiness map[string]ModelReadiness `json:"readiness"`
	Metrics   Metrics                   `json:"metrics"`
}

// Status is what the agent is doing now.
func (a *Agent) Status() Status {
	return Status{Agent: Version, Device: a.config().device(), UptimeS: time.Since(a.opts.Started).Seconds(),
		Models: a.pool.Models(), Readiness: a.readiness(), Metrics: a.metrics()}
}

func (a *Agent) modelCommand(ctx context.Context, verb, id string) (any, error) {
	switch verb {
	case "prewarm":
		rep, loaded, err := a.pool.Prewarm(ctx, id)
		a.noteLoad(id, err)
		if err != nil {
			return nil, a.modelError(id, err)
		}
		a.event("prewarm_done", map[string]any{"model": id, "loaded": loaded, "cold_ms": ms(rep.Stages.Cold())})
		return map[string]any{"model": id, "loaded": loaded, "load": rep}, nil
	case "evict":
		return map[string]any{"model": id}, a.pool.Evict(id)
	default: // pin, unpin
		return map[string]any{"model": id, "pinned": verb == "pin"}, a.pool.SetPinned(id, verb == "pin")
	}
}

// InferReply is the reply to "infer".
type InferReply struct {
	Model string `json:"model"` // the model that answered
	// Family and Variant are set when the request named a family: which
	// variant answered (the fast one while the precise one warms).
	Family   string             `json:"family,omitempty"`
	Variant  string             `json:"variant,omitempty"`
	Warm     bool               `json:"warm"` // served by an interpreter that was already warm
	InvokeMs float64            `json:"invoke_ms"`
	Top      []infer.Class      `json:"top,omitempty"`
	Output   []byte             `json:"output,omitempty"` // raw output tensor (base64), when asked
	Tensor   *tflite.TensorInfo `json:"output_tensor,omitempty"`
}

func (a *Agent) inferCommand(ctx context.Context, c mqtt.Command) (any, error) {
	var req struct {
		envelope
		Model string `json:"model"`
		Input string `json:"input"` // base64 of the raw input tensor
		Image string `json:"image"` // base64 of a BMP/PNG/JPEG, prepared for the model that answers
		Top   int    `json:"top"`
		Raw   bool   `json:"raw"`
	}
	var input, img []byte
	if c.Binary {
		req.Model = c.Model
		if infer.IsImage(c.Payload) {
			img = c.Payload
		} else {
			input = c.Payload
		}
	} else {
		if err := decodeStrict(c.Payload, &req); err != nil {
			return nil, err
		}
		if c.Model != "" && req.Model != "" && c.Model != req.Model {
			return nil, badCommand("model differs between topic and payload")
		}
		if req.Model == "" {
			req.Model = c.Model
		}
		var err error
		if input, err = base64.StdEncoding.DecodeString(req.Input); err != nil {
			return nil, badCommand("input is not base64: %v", err)
		}
		if img, err = base64.StdEncoding.DecodeString(req.Image); err != nil {
			return nil, badCommand("image is not base64: %v", err)
		}
	}
	if err := checkModelID(req.Model); err != nil {
		return nil, err
	}
	if (len(input) == 0) == (len(img) == 0) {
		return nil, badCommand("give exactly one of input (raw tensor) or image")
	}
	if req.Top < 0 || req.Top > 100 {
		return nil, badCommand("top must be 0..100")
	}
	if req.Top == 0 {
		req.Top = 5
	}
	r := infer.Request{Tensor: input, Top: req.Top, Raw: req.Raw}
	if len(img) > 0 {
		var err error
		if r.Image, err = infer.DecodeImage(img, a.config().Infer.MaxImagePixels); err != nil {
			return nil, err
		}
	}
	model, family := a.route(req.Model)
	l, err := a.pool.Acquire(ctx, model)
	if err != nil {
		a.noteLoad(model, err)
		return nil, a.modelError(model, err)
	}
	defer l.Release()
	if !l.Warm {
		a.noteLoad(model, nil)
	}
	if !r.Raw {
		r.Labels = a.labelsFor(model)
	}
	res, err := infer.Run(l, r)
	if err != nil {
		return nil, err
	}
	// Demand is recorded for models, never family ids (the planner and the
	// schedule rank models): for the variant that answered, and for the
	// family's precise variant when a faster one stood in for it, since
	// that is the one the next wake should have warm.
	now := a.opts.Now()
	a.usage.record(model, now)
	if family != "" {
		if f, ok := a.config().family(family); ok && f.Variants[len(f.Variants)-1] != model {
			a.usage.record(f.Variants[len(f.Variants)-1], now)
		}
	}
	a.firstRequest(req.Model, l.Warm)
	rep := InferReply{Model: model, Warm: l.Warm, InvokeMs: ms(res.Invoke), Top: res.Top}
	if family != "" {
		rep.Family, rep.Variant = family, model
	}
	if req.Raw {
		rep.Output, rep.Tensor = res.Raw, &res.Output
	}
	return rep, nil
}

// route resolves a family id to the variant that answers now: the precise
// one once warm (from then on, unless it is evicted), otherwise the most
// precise warm one, otherwise the fastest; the precise one is warmed in the
// background meanwhile. A model id routes to itself.
func (a *Agent) route(id string) (model, family string) {
	f, ok := a.config().family(id)
	if !ok {
		return id, ""
	}
	precise := f.Variants[len(f.Variants)-1]
	if a.pool.IsWarm(precise) {
		return precise, f.ID
	}
	a.warmInBackground(precise)
	for i := len(f.Variants) - 2; i >= 0; i-- {
		if a.pool.IsWarm(f.Variants[i]) {
			return f.Variants[i], f.ID
		}
	}
	return f.Variants[0], f.ID
}

// warmInBackground warms model on an agent-owned goroutine, once at a time.
func (a *Agent) warmInBackground(model string) {
	a.warmMu.Lock()
	if a.warming[model] || a.runCtx == nil {
		a.warmMu.Unlock()
		return
	}
	a.warming[model] = true
	a.warmMu.Unlock()
	a.spawn(a.runCtx, func(ctx context.Context) {
		defer func() {
			a.warmMu.Lock()
			delete(a.warming, model)
			a.warmMu.Unlock()
		}()
		_, _ = a.prewarmOne(ctx, model, "family")
	})
}

func (a *Agent) setBudget(raw json.RawMessage) (any, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil || raw == nil {
		return nil, badCommand("budget is required: bytes or a size like \"256MiB\"")
	}
	var n ByteSize
	switch x := v.(type) {
	case float64:
		if x < 0 || x != float64(int64(x)) {
			return nil, badCommand("budget must be a whole number of bytes")
		}
		n = ByteSize(x)
	case string:
		var err error
		if n, err = ParseByteSize(x); err != nil {
			return nil, badCommand("%v", err)
		}
	default:
		return nil, badCommand("budget must be a number or a string")
	}
	err := a.pool.SetBudget(int64(n))
	st := a.pool.Stats()
	return map[string]any{"budget": int64(n), "bytes_in_use": st.BytesInUse, "evictions": st.Evictions}, err
}

// rescan looks at the configured models (the models dir) again: new ones
// are registered, vanished ones unregistered; the rest stay warm.
func (a *Agent) rescan() (any, error) {
	res := a.syncModels()
	if len(res.Added)+len(res.Changed) > 0 {
		a.PostWake("reload")
	}
	return res, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// firstRequest reports the first request to each model after a wake, and
// whether it found the model warm.
func (a *Agent) firstRequest(model string, warm bool) {
	a.wakeMu.Lock()
	first := !a.seen[model]
	a.seen[model] = true
	a.wakeMu.Unlock()
	if first {
		a.event("first_request", map[string]any{"model": model, "warm": warm})
	}
}
