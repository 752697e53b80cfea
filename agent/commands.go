package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/edge-agent/edge-agent/errcode"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/tflite"
)

// Command errors; tflite's kinds (unknown_model, input_size, over_budget,
// model_pinned, model_busy, ...) pass through with their own codes.
var (
	ErrBadCommand  = errcode.New("bad_request", "malformed command")
	ErrBadModelID  = errcode.New("bad_model_id", "model id is not an id (letters, digits, '.', '_', '-'; no paths)")
	ErrUnknownVerb = errcode.New("unknown_verb", "unknown command")
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
var Verbs = []string{"status", "prewarm", "evict", "pin", "unpin", "infer", "rescan", "reload", "rollback", "set-budget", "wake"}

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
	case "prewarm", "evict", "pin", "unpin", "rollback":
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
	// LocalBroker says how the embedded broker admits clients, when the
	// agent serves one (auth "anonymous": anyone who reaches it).
	LocalBroker *mqtt.LocalInfo `json:"local_broker,omitempty"`
}

// Status is what the agent is doing now.
func (a *Agent) Status() Status {
	if a.reg.pending != nil {
		<-a.reg.pending.all // every configured model in it
	}
	return Status{Agent: Version, Device: a.config().device(), UptimeS: time.Since(a.opts.Started).Seconds(),
		Models: a.pool.Models(), Readiness: a.ready.models(), Metrics: a.tel.metrics(false), LocalBroker: a.broker.info.Load()}
}

func (a *Agent) modelCommand(ctx context.Context, verb, id string) (any, error) {
	switch verb {
	case "prewarm":
		rep, loaded, err := a.pool.Prewarm(ctx, id)
		a.ready.noteLoad(id, err)
		if err != nil {
			return nil, a.ready.modelError(id, err)
		}
		a.tel.event("prewarm_done", map[string]any{"model": id, "loaded": loaded, "cold_ms": ms(rep.Stages.Cold())})
		return map[string]any{"model": id, "loaded": loaded, "load": rep}, nil
	case "evict":
		return map[string]any{"model": id}, a.pool.Evict(id)
	case "rollback":
		return a.Rollback(ctx, id, "requested")
	default: // pin, unpin
		return map[string]any{"model": id, "pinned": verb == "pin"}, a.pool.SetPinned(id, verb == "pin")
	}
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
		a.wakeWhenQuiet("reload")
	}
	return res, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
