package agent

import (
	"time"

	"context"
	"encoding/base64"

	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/agent/observe"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/tflite"
)

// Serving inference: the infer command, family routing, first requests.

// InferReply is the reply to "infer".
type InferReply struct {
	Model string `json:"model"` // the model that answered
	// Family and Variant are set when the request named a family: which
	// variant answered (the fast one while the precise one warms).
	Family  string `json:"family,omitempty"`
	Variant string `json:"variant,omitempty"`
	Warm    bool   `json:"warm"` // served by an interpreter that was already warm
	// Escalated says why a family request waited for the precise variant
	// (a low-score fast answer, or low fast-path agreement).
	Escalated string        `json:"escalated,omitempty"`
	InvokeMs  float64       `json:"invoke_ms"`
	Top       []infer.Class `json:"top,omitempty"`
	// Outputs are every output tensor when the model is not a classifier
	// (data base64, in the tensor's type, little-endian).
	Outputs []infer.Output `json:"outputs,omitempty"`
	// Detections and Keypoints read a detector's or a pose model's outputs
	// (TFLite_Detection_PostProcess; [1,1,K,3] keypoints).
	Detections []infer.Detection  `json:"detections,omitempty"`
	Keypoints  []infer.Keypoint   `json:"keypoints,omitempty"`
	Output     []byte             `json:"output,omitempty"` // raw output tensor (base64), when asked
	Tensor     *tflite.TensorInfo `json:"output_tensor,omitempty"`
}

func (a *Agent) inferCommand(ctx context.Context, c mqtt.Command) (any, error) {
	arrived := c.Received
	if arrived.IsZero() {
		arrived = time.Now()
	}
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
	rep, _, err := a.infer(ctx, inferCall{model: req.Model, tensor: input, image: img, top: req.Top, raw: req.Raw,
		transport: "mqtt", arrived: arrived})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// inferCall is one inference from a transport (MQTT, HTTP): the one
// pipeline every transport goes through.
type inferCall struct {
	model         string
	tensor, image []byte // exactly one: a raw input tensor, or image bytes
	top           int    // 0: 5
	raw           bool
	transport     string // the metrics' transport label: mqtt, http
	arrived       time.Time
}

// infer checks, decodes and runs one request, and records it; the result
// carries every output's bytes for adapters that need them (res.Raw is
// output 0's, res.Outputs every output of a non-classifier).
func (a *Agent) infer(ctx context.Context, q inferCall) (InferReply, infer.Result, error) {
	arrived := q.arrived
	if arrived.IsZero() {
		arrived = time.Now()
	}
	req := struct {
		Model string
		Top   int
		Raw   bool
	}{q.model, q.top, q.raw}
	input, img := q.tensor, q.image
	if err := checkModelID(req.Model); err != nil {
		return InferReply{}, infer.Result{}, err
	}
	if (len(input) == 0) == (len(img) == 0) {
		return InferReply{}, infer.Result{}, badCommand("give exactly one of input (raw tensor) or image")
	}
	if req.Top < 0 || req.Top > 100 {
		return InferReply{}, infer.Result{}, badCommand("top must be 0..100")
	}
	if req.Top == 0 {
		req.Top = 5
	}
	r := infer.Request{Tensor: input, Top: req.Top, Raw: req.Raw}
	if len(img) > 0 {
		// The image holds its share of the decode budget until the
		// request is answered (an escalation resizes it again).
		d, err := a.mem.decodes.Decode(ctx, img, a.config().Infer.MaxImagePixels)
		if err != nil {
			return InferReply{}, infer.Result{}, err
		}
		defer d.Release()
		r.Image = d.Image
	}
	model, family := a.route(req.Model)
	// What the request produced goes to the observers (observers.go), once,
	// however it ends.
	done := observe.RequestDone{Asked: req.Model, Model: model, Family: family, Image: img, Tensor: input, Transport: q.transport, Arrived: arrived}
	fail := func(stage observe.Stage, err error) error {
		done.Err, done.Stage = err, stage
		a.observers.Done(done)
		return err
	}
	l, err := a.pool.Acquire(ctx, model)
	if err != nil {
		_ = fail(observe.StageLoad, err)
		return InferReply{}, infer.Result{}, a.ready.modelError(model, err)
	}
	defer l.Release()
	done.Loaded = !l.Warm
	if !r.Raw {
		r.Labels = a.ready.labelsFor(model)
	}
	res, err := infer.Run(l, r)
	l.Release()                // not held while an escalation waits
	done.Version = l.Version() // the old one's, for a request leased before a swap
	if err != nil {
		return InferReply{}, infer.Result{}, fail(observe.StageRun, err)
	}
	done.Result = res
	// Family tiers decide the answer (an escalation replaces it), so they
	// are part of serving, not observers.
	warm, answered, escalated := l.Warm, model, ""
	if f, ok := a.config().family(family); ok {
		if precise := f.Variants[len(f.Variants)-1]; model == precise {
			a.checkSamples(f) // fast answers kept while it warmed
		} else {
			a.sampleFast(f, img, input, res)
			if why := a.escalation(f, &res); why != "" {
				pres, ok, pwarm, err := a.escalate(ctx, f, r)
				switch {
				case err != nil:
					return InferReply{}, infer.Result{}, fail(observe.StageEscalate, err)
				case ok:
					res, answered, warm, escalated = pres, precise, pwarm, "escalated: "+why
				default:
					escalated = "escalated: " + why + "; the precise variant was not ready within escalate_wait, so the fast one answered"
				}
			}
		}
	}
	done.Answered, done.AnsweredVersion, done.Warm = answered, done.Version, warm
	if answered != model {
		done.AnsweredVersion = "" // the precise variant's lease, not this one
	}
	done.E2E, done.Invoke = time.Since(arrived), res.Invoke
	a.observers.Done(done)
	rep := InferReply{Model: answered, Warm: warm, InvokeMs: ms(res.Invoke), Top: res.Top, Outputs: res.Outputs,
		Detections: res.Detections, Keypoints: res.Keypoints, Escalated: escalated}
	if family != "" {
		rep.Family, rep.Variant = family, answered
	}
	if req.Raw {
		rep.Output, rep.Tensor = res.Raw, &res.Output
	}
	return rep, res, nil
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
	a.planner.warmInBackground(precise)
	for i := len(f.Variants) - 2; i >= 0; i-- {
		if a.pool.IsWarm(f.Variants[i]) {
			return f.Variants[i], f.ID
		}
	}
	return f.Variants[0], f.ID
}
