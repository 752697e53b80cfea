// Package agent wires edge-agent together: configuration, the command
// line, and the lifecycle of the daemon (`run`). The subsystems (tflite,
// and later power, storage and mqtt) know nothing of each other; this
// package connects them explicitly.
package agent
