package oip

import (
	"net/http"
	"strings"
)

// StatusOf maps an error code of the agent to the HTTP status the
// protocol answers with:
//
//	400 the request is wrong: bad_request, bad_model_id, input_size,
//	    input_unsupported, input_image_decode, input_not_image_model,
//	    tensor_type, tensor_index, input_unreadable
//	404 unknown_model, version_not_serving (a kept version that does not
//	    serve; an unknown version is 404 too)
//	413 payload_too_large, input_too_large
//	503 try later: over_budget, busy, model_busy, pool_closed,
//	    shutting_down, timeout
//	500 anything else (a model file that cannot run here, invoke, internal)
func StatusOf(code string) int {
	switch code {
	case "bad_request", "bad_model_id", "input_size", "input_unsupported", "input_image_decode",
		"input_not_image_model", "tensor_type", "tensor_index", "input_unreadable":
		return http.StatusBadRequest
	case "unknown_model", "version_not_serving":
		return http.StatusNotFound
	case "payload_too_large", "input_too_large":
		return http.StatusRequestEntityTooLarge
	case "over_budget", "busy", "model_busy", "pool_closed", "shutting_down", "timeout":
		return http.StatusServiceUnavailable
	}
	if strings.HasPrefix(code, "input_") {
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// Error is a refusal of the adapter itself, with its code.
type Error struct {
	code, msg string
}

func (e *Error) Error() string { return e.msg }

// Code is the stable code.
func (e *Error) Code() string { return e.code }

func badRequest(msg string) error { return &Error{"bad_request", msg} }
