package mqtttest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Received is one message a Subscriber got.
type Received struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Subscriber is a test-side MQTT client that records what it receives.
type Subscriber struct {
	c    paho.Client
	ch   chan Received
	subs atomic.Int64
}

// ClientOptions for test clients: the broker's URL, TLS with its CA, and
// credentials when given.
func (b *Broker) ClientOptions(id, user, password string) *paho.ClientOptions {
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID(id).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(50 * time.Millisecond).SetMaxReconnectInterval(200 * time.Millisecond).
		SetOrderMatters(true)
	if user != "" {
		o.SetUsername(user).SetPassword(password)
	}
	if b.CAFile != "" {
		pem, _ := os.ReadFile(b.CAFile)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		o.SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	return o
}

// Subscribe connects a persistent-session client (it keeps its QoS 1
// subscription across broker restarts while the broker runs) and records
// every message on filter.
func (b *Broker) Subscribe(t testing.TB, id, filter string, creds ...string) *Subscriber {
	t.Helper()
	user, pw := "", ""
	if len(creds) == 2 {
		user, pw = creds[0], creds[1]
	}
	s := &Subscriber{ch: make(chan Received, 1<<16)}
	var once sync.Once
	subscribed := make(chan error, 1)
	o := b.ClientOptions(id, user, pw).SetOnConnectHandler(func(c paho.Client) {
		// Resubscribe on every connection: a killed broker forgets sessions.
		tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
			s.ch <- Received{Topic: m.Topic(), Payload: append([]byte{}, m.Payload()...), Retained: m.Retained()}
		})
		go func() {
			tok.Wait()
			if tok.Error() == nil {
				s.subs.Add(1)
			}
			once.Do(func() { subscribed <- tok.Error() })
		}()
	})
	s.c = paho.NewClient(o)
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("test subscriber connect: %v", tok.Error())
	}
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("test subscriber: subscribe timed out")
	}
	t.Cleanup(func() { s.c.Disconnect(100) })
	return s
}

// Next waits for the next message.
func (s *Subscriber) Next(t testing.TB, timeout time.Duration) Received {
	t.Helper()
	select {
	case m := <-s.ch:
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %v", timeout)
		return Received{}
	}
}

// Subscribed is how many times the subscription was acknowledged: once
// per connection, so it grows when the client is back after a restart.
func (s *Subscriber) Subscribed() int64 { return s.subs.Load() }

// Chan delivers received messages.
func (s *Subscriber) Chan() <-chan Received { return s.ch }

// Publish sends a message from the test client.
func (s *Subscriber) Publish(t testing.TB, topic string, payload []byte) {
	t.Helper()
	tok := s.c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// PublishRetained sends a retained message (an empty payload clears the
// topic's).
func (s *Subscriber) PublishRetained(t testing.TB, topic string, payload []byte) {
	t.Helper()
	tok := s.c.Publish(topic, 1, true, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// PublishAsync sends without waiting for the acknowledgement.
func (s *Subscriber) PublishAsync(topic string, payload []byte) paho.Token {
	return s.c.Publish(topic, 1, false, payload)
}

func (r Received) String() string { return fmt.Sprintf("%s %s", r.Topic, r.Payload) }
