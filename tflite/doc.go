// Package tflite is edge-agent's only door to TensorFlow Lite: it loads
// models by memory mapping, creates interpreters, times every stage of a cold
// start, measures what each warm interpreter costs in memory, and keeps a
// budgeted pool of warm interpreters.
//
// It is the only package that imports go-tflite or uses cgo. Every failed
// runtime call becomes a *Error carrying a Kind (a documented sentinel with a
// stable code) and the runtime's own message. C objects are freed explicitly
// (interpreter, delegates, options, then the shared model); nothing relies on
// garbage-collector cleanups.
package tflite
