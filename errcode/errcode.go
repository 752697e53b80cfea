// Package errcode defines error kinds: classes of failure with a stable
// machine-readable code, used in the CLI's JSON output and exit status and
// in command replies. It needs no cgo and imports nothing of ours, so every
// package (tflite included) makes its kinds here and callers match them with
// errors.Is.
package errcode

import "errors"

// Kind is a class of failure with a stable code. Kinds are compared by
// identity: make each one once, as a package-level variable.
type Kind struct {
	code string
	msg  string
}

// New defines a kind with its stable code (e.g. "model_truncated") and the
// message its Error returns.
func New(code, msg string) *Kind { return &Kind{code: code, msg: msg} }

func (k *Kind) Error() string { return k.msg }

// Code is the stable identifier of the kind, e.g. "model_truncated".
func (k *Kind) Code() string { return k.code }

// Code returns the stable code of err's kind, "" when err is nil and
// "internal" when it carries no kind.
func Code(err error) string {
	if err == nil {
		return ""
	}
	var k *Kind
	if errors.As(err, &k) {
		return k.code
	}
	return "internal"
}
