package mqtt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// CallReply is an agent's reply to one command, with the result left raw.
type CallReply struct {
	Schema int             `json:"schema"`
	ID     string          `json:"id,omitempty"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *ReplyError     `json:"error,omitempty"`
}

// Call sends one command to the agent o.Device and waits for its reply:
// the client side of the command topics (`edge-agent call`). A binary
// payload goes on cmd/<verb>/<id>/<model>; a JSON one on cmd/<verb>/<id>.
// It connects with a clean session and its own client id, so it never
// takes over the agent's session.
func Call(ctx context.Context, o Options, verb, model string, payload []byte, binary bool) (CallReply, error) {
	o.defaults()
	id := callID()
	replies := make(chan paho.Message, 1)
	c, err := dialOnce(ctx, o, "edge-agent-call-"+id)
	if err != nil {
		return CallReply{}, fmt.Errorf("call: %w", err)
	}
	defer c.Disconnect(100)
	base := o.Prefix + "/" + o.Device + "/"
	if err := wait(ctx, c.Subscribe(base+"reply/"+id, 1, func(_ paho.Client, m paho.Message) {
		select {
		case replies <- m:
		default:
		}
	}), o.ConnectTimeout); err != nil {
		return CallReply{}, fmt.Errorf("call: subscribe: %w", err)
	}
	topic := base + "cmd/" + verb + "/" + id
	if binary && model != "" {
		topic += "/" + model
	}
	if err := wait(ctx, c.Publish(topic, 1, false, payload), o.ConnectTimeout); err != nil {
		return CallReply{}, fmt.Errorf("call: publish: %w", err)
	}
	select {
	case <-ctx.Done():
		return CallReply{}, fmt.Errorf("call: no reply from %s: %w", o.Device, ctx.Err())
	case m := <-replies:
		var r CallReply
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			return CallReply{}, fmt.Errorf("call: reply is not JSON: %w", err)
		}
		return r, nil
	}
}

// callID is a request id no other caller uses.
func callID() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return fmt.Sprintf("c%d", os.Getpid())
	}
	return "c" + hex.EncodeToString(b)
}

// dialOnce connects a short-lived client (clean session, no reconnects)
// under its own id: the command-line side of the topics.
func dialOnce(ctx context.Context, o Options, clientID string) (paho.Client, error) {
	o.defaults()
	if len(o.Brokers) == 0 {
		return nil, ErrNotConfigured
	}
	pw, err := o.password()
	if err != nil {
		return nil, err
	}
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return nil, err
	}
	po := paho.NewClientOptions().SetClientID(clientID).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(o.ConnectTimeout)
	for _, b := range o.Brokers {
		po.AddBroker(b)
	}
	if o.Username != "" {
		po.SetUsername(o.Username).SetPassword(pw)
	}
	if tlsCfg != nil {
		po.SetTLSConfig(tlsCfg)
	}
	c := paho.NewClient(po)
	if err := wait(ctx, c.Connect(), o.ConnectTimeout+time.Second); err != nil {
		return nil, fmt.Errorf("connect to %v: %w", o.Brokers, err)
	}
	return c, nil
}

// PublishOnce connects, publishes each message (retained when asked) and
// waits for the broker's acknowledgements, then disconnects.
func PublishOnce(ctx context.Context, o Options, retain bool, msgs map[string][]byte) error {
	o.defaults()
	c, err := dialOnce(ctx, o, "edge-agent-pub-"+callID())
	if err != nil {
		return err
	}
	defer c.Disconnect(100)
	for topic, payload := range msgs {
		if err := wait(ctx, c.Publish(topic, 1, retain, payload), o.ConnectTimeout); err != nil {
			return fmt.Errorf("publish %s: %w", topic, err)
		}
	}
	return nil
}
