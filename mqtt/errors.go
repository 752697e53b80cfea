package mqtt

import (
	"context"
	"errors"
)

// Error is a command failure with a stable code for replies.
type Error struct {
	code string
	msg  string
}

func (e *Error) Error() string { return e.msg }

// Code is the stable reply code.
func (e *Error) Code() string { return e.code }

// Codes this package answers with; the command handler adds its own.
var (
	ErrBadRequest    = &Error{"bad_request", "malformed command: not a valid JSON object"}
	ErrTooLarge      = &Error{"payload_too_large", "command payload exceeds the size limit"}
	ErrBadRequestID  = &Error{"bad_request_id", "request id must be 1-64 of [A-Za-z0-9._-]"}
	ErrBusy          = &Error{"busy", "command queue is full; retry later"}
	ErrTimeout       = &Error{"timeout", "command did not finish in time"}
	ErrShuttingDown  = &Error{"shutting_down", "agent is shutting down"}
	ErrNotConfigured = errors.New("mqtt: no broker configured")
	ErrNotConnected  = errors.New("mqtt: not connected to the broker")
	// ErrAuth: the broker refused the credentials; the client stops
	// retrying after Options.MaxAuthFailures.
	ErrAuth = errors.New("mqtt: broker refused the credentials")
)

// CodeOf returns err's reply code: its own Code() when it has one.
func CodeOf(err error) string {
	var c interface{ Code() string }
	switch {
	case errors.As(err, &c):
		return c.Code()
	case errors.Is(err, context.DeadlineExceeded):
		return ErrTimeout.code
	case errors.Is(err, context.Canceled):
		return ErrShuttingDown.code
	}
	return "internal"
}
