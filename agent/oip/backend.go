package oip

import (
	"context"
	"errors"
)

// Backend is what the adapter needs of the agent.
type Backend interface {
	// Live is false once the agent is shutting down.
	Live() bool
	// Ready reports whether the pool can serve.
	Ready() bool
	// Model describes a model the agent serves (ok false: unknown).
	Model(name string) (Model, bool)
	// ModelReady reports whether the model (at version, "" for the one
	// serving) is warm or can be loaded.
	ModelReady(name, version string) bool
	// Infer runs one request through the agent's infer pipeline.
	Infer(ctx context.Context, r Request) (Response, error)
}

// Model is a model's metadata.
type Model struct {
	Name string
	// Versions are the kept versions (sha256), the serving one first.
	Versions []string
	Inputs   []TensorMeta
	Outputs  []TensorMeta
}

// TensorMeta is a tensor's name, datatype (the protocol's: UINT8, FP32,
// ...) and shape.
type TensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// Request is one inference: exactly one of Tensor (the raw input tensor,
// little-endian, in the input's own type) and Image (encoded bytes).
type Request struct {
	Model, Version string
	Tensor, Image  []byte
	// Classes, when > 0, asks for the top classes of a classifier.
	Classes int
}

// Response is what the pipeline produced.
type Response struct {
	Model, Version string
	Outputs        []Tensor
	// Top are the ranked classes when Request.Classes > 0.
	Top []Class
}

// Tensor is an output tensor: metadata and little-endian data.
type Tensor struct {
	TensorMeta
	Data []byte
}

// Class is one ranked class of a classifier's output.
type Class struct {
	Index int
	Label string
	Score float32
}

// Coded is an error with a stable code (the agent's error vocabulary:
// unknown_model, input_size, over_budget, ...).
type Coded interface{ Code() string }

// code is err's stable code, "internal" without one.
func code(err error) string {
	var c Coded
	switch {
	case errors.As(err, &c):
		return c.Code()
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "shutting_down"
	}
	return "internal"
}
