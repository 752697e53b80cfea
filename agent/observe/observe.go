// Package observe carries what one request produced to the parts of the
// agent that learn from requests (latency records, Prometheus, usage, the
// parity ring, the rollback guard, family tiers, the wake tracker), so the
// request path knows none of them: it builds one RequestDone and hands it
// to the list.
package observe

import (
	"time"

	"github.com/edge-agent/edge-agent/agent/infer"
)

// RequestDone is one finished request, answered or failed.
type RequestDone struct {
	// Asked is the id the request named: a model, or a family.
	Asked string
	// Model is the model the request was routed to (a family's variant);
	// Family is set when Asked was a family.
	Model, Family string
	// Version is the digest of the version of Model whose lease ran it.
	Version string
	// Image and Tensor are the request's input as it arrived (exactly one
	// is set), kept by reference: observers must not modify them. An
	// observer that keeps them (the parity ring) keeps the reference.
	Image, Tensor []byte
	// Result is what Model answered, before any escalation.
	Result infer.Result
	// Loaded: Model's lease loaded it (a cold start).
	Loaded bool
	// Answered is who answered: Model, or the family's precise variant when
	// the request escalated to it; AnsweredVersion is "" then (the precise
	// variant answered on its own lease). Warm: the answer came from an
	// interpreter that was already warm.
	Answered, AnsweredVersion string
	Warm                      bool
	// Transport is the metrics' transport label (mqtt, http).
	Transport string
	// Arrived is when the transport received the request; E2E is arrival
	// to answer; Invoke the answer's invoke alone.
	Arrived     time.Time
	E2E, Invoke time.Duration
	// Err is the request's failure (nil when answered) and Stage where it
	// failed: StageLoad (acquiring Model), StageRun (Model's invoke) or
	// StageEscalate (Model answered, the escalation failed).
	Err   error
	Stage Stage
}

// Stage is where a request failed.
type Stage string

// The stages a request can fail at.
const (
	StageLoad     Stage = "load"
	StageRun      Stage = "run"
	StageEscalate Stage = "escalate"
)

// Ran says Model ran and answered (the request may still have failed
// after, at StageEscalate).
func (d RequestDone) Ran() bool { return d.Err == nil || d.Stage == StageEscalate }

// Observer learns from finished requests. RequestDone runs on the request's
// goroutine after the answer is ready: it must be quick and must not block
// (hand slow work to a goroutine the observer owns).
type Observer interface {
	RequestDone(RequestDone)
}

// Func adapts a function to Observer.
type Func func(RequestDone)

// RequestDone calls f.
func (f Func) RequestDone(d RequestDone) { f(d) }

// List is the observers of one agent, in the order they were added. It is
// built before the agent serves and not changed after, so Done reads it
// without a lock.
type List []Observer

// Done hands d to every observer in order.
func (l List) Done(d RequestDone) {
	for _, o := range l {
		o.RequestDone(d)
	}
}
