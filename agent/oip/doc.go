// Package oip serves the Open Inference Protocol (KServe v2, REST) over
// HTTP: health, server and model metadata, model readiness and infer, with
// JSON tensors, the binary tensor data extension and the classification
// extension, plus an image convenience (a BMP/PNG/JPEG body with
// Content-Type image/*).
//
// It is a thin adapter: it parses and writes the protocol and maps error
// codes to HTTP statuses; everything else (the pool, the infer pipeline,
// the limits, the metrics) is behind Backend, which the agent implements.
//
// Spec: https://github.com/kserve/open-inference-protocol (REST API),
// binary extension as in Triton's binary_data.md.
package oip
