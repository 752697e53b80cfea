package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// The first request for a model after a wake raises a "first_request"
// event; the answer does not wait for the event's write (an outbox commit
// with an fsync). The write is held here until the answer came.
func TestFirstAnswerDoesNotWaitForItsEvent(t *testing.T) {
	held := make(chan struct{})
	release := make(chan struct{})
	cfg := testConfig(t, agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")})
	a := start(t, cfg, agent.Options{BeforeEventWrite: func(kind string) {
		if kind == "first_request" {
			close(held)
			<-release
		}
	}})
	defer a.Close()
	defer close(release) // before Close: the writer drains on stop
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	answered := make(chan error, 1)
	go func() {
		_, err := a.Command(ctx, mqtt.Command{Verb: "infer", ID: "q", Payload: []byte(`{"model":"xor","input":"AAAAAAAAAAA="}`)})
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatal(err)
		}
	case <-held:
		select {
		case err := <-answered:
			if err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("the first answer waited for its event's write")
		}
	}
	select {
	case <-held: // the event is written all the same
	case <-ctx.Done():
		t.Fatal("first_request event never written")
	}
}
