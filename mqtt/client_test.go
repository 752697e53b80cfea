package mqtt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
)

// memOutbox is a small fake below the package's Outbox interface; the
// agent's integration tests use the real bbolt outbox.
type memOutbox struct {
	mu   sync.Mutex
	msgs []mqtt.Message
	seq  uint64
}

func (o *memOutbox) add(topic string, payload []byte, retain bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq++
	o.msgs = append(o.msgs, mqtt.Message{Seq: o.seq, Topic: topic, Payload: payload, Retain: retain})
}

func (o *memOutbox) Pending(after uint64, limit int) ([]mqtt.Message, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []mqtt.Message
	for _, m := range o.msgs {
		if m.Seq > after && len(out) < limit {
			out = append(out, m)
		}
	}
	return out, nil
}

func (o *memOutbox) Ack(seqs ...uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	drop := map[uint64]bool{}
	for _, s := range seqs {
		drop[s] = true
	}
	kept := o.msgs[:0]
	for _, m := range o.msgs {
		if !drop[m.Seq] {
			kept = append(kept, m)
		}
	}
	o.msgs = kept
	return nil
}

func (o *memOutbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.msgs)
}

// echo answers "echo" with its payload, "slow" after a pause, and fails
// everything else with an error that has a code.
type echo struct{ delay time.Duration }

type codedErr struct{ code string }

func (e codedErr) Error() string { return "unknown verb " + e.code }
func (e codedErr) Code() string  { return "unknown_verb" }

func (e echo) Command(ctx context.Context, c mqtt.Command) (any, error) {
	switch c.Verb {
	case "echo":
		return map[string]any{"bytes": len(c.Payload), "binary": c.Binary, "model": c.Model}, nil
	case "panic":
		panic("a bug in a handler")
	case "slow":
		select {
		case <-time.After(e.delay):
			return "done", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, codedErr{c.Verb}
}

// startClient runs a client until the test ends; stop ends it earlier and
// returns Run's error (any number of calls).
func startClient(t *testing.T, o mqtt.Options, ob mqtt.Outbox, cmd mqtt.Commander) (*mqtt.Client, func() error) {
	t.Helper()
	if o.Device == "" {
		o.Device = "dev1"
	}
	o.MinReconnect, o.MaxReconnect = 20*time.Millisecond, 200*time.Millisecond
	c, err := mqtt.New(o, ob, cmd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		runErr = c.Run(ctx)
		close(done)
	}()
	stop := func() error {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return within 30s of cancel")
		}
		return runErr
	}
	t.Cleanup(func() { stop() })
	return c, stop
}

func waitReady(t *testing.T, c *mqtt.Client) {
	t.Helper()
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("not connected: %+v", c.Stats())
	}
}

func decodeReply(t *testing.T, m mqtttest.Received) mqtt.Reply {
	t.Helper()
	var r mqtt.Reply
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		t.Fatalf("reply %s: %v", m.Payload, err)
	}
	return r
}

func TestStatusOnlineAndOfflineOnShutdown(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	c, stop := startClient(t, mqtt.Options{Brokers: []string{b.URL()}, Version: "v-test"}, &memOutbox{}, echo{})
	waitReady(t, c)
	sub := b.Subscribe(t, "watcher", "edge/dev1/status")
	m := sub.Next(t, 5*time.Second)
	if !m.Retained || !strings.Contains(string(m.Payload), `"status":"online"`) || !strings.Contains(string(m.Payload), `"agent":"v-test"`) {
		t.Fatalf("status %v retained=%v", m, m.Retained)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	m = sub.Next(t, 5*time.Second)
	if !strings.Contains(string(m.Payload), `"status":"offline"`) {
		t.Fatalf("after shutdown: %v", m)
	}
}

// A status change that comes while the client stops (the agent's
// readiness publisher runs until the end) is not published after
// "offline": the retained status a stopped agent leaves is offline. A
// real systemd check found "online" retained after systemctl stop.
func TestNoOnlineStatusAfterOffline(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	c, stop := startClient(t, mqtt.Options{Brokers: []string{b.URL()}, Version: "v-test"}, &memOutbox{}, echo{})
	waitReady(t, c)
	done := make(chan struct{})
	setting := make(chan struct{})
	go func() {
		defer close(setting)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			c.SetStatus(map[string]any{"n": i})
			time.Sleep(time.Millisecond)
		}
	}()
	err := stop()
	close(done)
	<-setting
	if err != nil {
		t.Fatal(err)
	}
	late := b.Subscribe(t, "late", "edge/dev1/status")
	if m := late.Next(t, 5*time.Second); !m.Retained || !strings.Contains(string(m.Payload), `"status":"offline"`) {
		t.Fatalf("retained status after stop: %s", m.Payload)
	}
}

func TestOutboxFlushedInOrderAndAcked(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	sub := b.Subscribe(t, "watcher", "edge/dev1/telemetry/#")
	ob := &memOutbox{}
	for i := range 300 {
		ob.add("telemetry/events", fmt.Appendf(nil, "%d", i+1), false)
	}
	c, _ := startClient(t, mqtt.Options{Brokers: []string{b.URL()}, Inflight: 16}, ob, echo{})
	for i := range 300 {
		m := sub.Next(t, 10*time.Second)
		if string(m.Payload) != fmt.Sprint(i+1) {
			t.Fatalf("message %d is %q", i+1, m.Payload)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for ob.len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ob.len(); n != 0 {
		t.Fatalf("%d messages not acknowledged; stats %+v", n, c.Stats())
	}
	// New messages go out when notified.
	ob.add("telemetry/events", []byte("late"), false)
	c.Notify()
	if m := sub.Next(t, 5*time.Second); string(m.Payload) != "late" {
		t.Fatalf("late message %v", m)
	}
}

func TestCommandsAndReplies(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	c, _ := startClient(t, mqtt.Options{Brokers: []string{b.URL()}, MaxPayload: 1024}, &memOutbox{}, echo{})
	waitReady(t, c)
	sub := b.Subscribe(t, "operator", "edge/dev1/reply/#")
	cases := []struct {
		topic, payload, replyTopic, code string
	}{
		{"edge/dev1/cmd/echo", `{"id":"r1","x":1}`, "edge/dev1/reply/r1", ""},
		{"edge/dev1/cmd/echo/r2/mymodel", "\x00\x01binary", "edge/dev1/reply/r2", ""},
		{"edge/dev1/cmd/echo/r3", `{"id":"r3"`, "edge/dev1/reply/r3", "bad_request"},
		{"edge/dev1/cmd/nope", `{"id":"r4"}`, "edge/dev1/reply/r4", "unknown_verb"},
		{"edge/dev1/cmd/echo/r5", `{"id":"` + strings.Repeat("x", 2000) + `"}`, "edge/dev1/reply/r5", "payload_too_large"},
		{"edge/dev1/cmd/echo", `{"id":"../../etc"}`, "edge/dev1/reply/invalid", "bad_request_id"},
		{"edge/dev1/cmd/echo/r7", `{"id":"other"}`, "edge/dev1/reply/r7", "bad_request"},
		{"edge/dev1/cmd/echo", "raw-without-id", "edge/dev1/reply/invalid", "bad_request"},
	}
	for _, cs := range cases {
		sub.Publish(t, cs.topic, []byte(cs.payload))
		m := sub.Next(t, 5*time.Second)
		r := decodeReply(t, m)
		if m.Topic != cs.replyTopic {
			t.Fatalf("%s: reply on %s, want %s (%s)", cs.topic, m.Topic, cs.replyTopic, m.Payload)
		}
		if cs.code == "" && !r.OK || cs.code != "" && (r.OK || r.Error.Code != cs.code) {
			t.Fatalf("%s %q: reply %s, want code %q", cs.topic, cs.payload, m.Payload, cs.code)
		}
	}
	if s := c.Stats(); s.Rejected != 5 || !s.Connected {
		t.Fatalf("stats %+v", s)
	}
}

// A command that panics answers "internal", tells OnPanic, and the client
// (and the process) goes on serving.
func TestPanicInCommandAnswersInternal(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	panics := make(chan string, 1)
	c, _ := startClient(t, mqtt.Options{Brokers: []string{b.URL()}, OnPanic: func(cmd mqtt.Command, v any, stack []byte) {
		panics <- fmt.Sprintf("%s %v %d", cmd.ID, v, len(stack))
	}}, &memOutbox{}, echo{})
	waitReady(t, c)
	sub := b.Subscribe(t, "operator", "edge/dev1/reply/#")
	sub.Publish(t, "edge/dev1/cmd/panic/p1", []byte(`{}`))
	if r := decodeReply(t, sub.Next(t, 5*time.Second)); r.OK || r.Error.Code != "internal" || r.ID != "p1" {
		t.Fatalf("panic reply %+v", r)
	}
	select {
	case p := <-panics:
		if !strings.HasPrefix(p, "p1 a bug in a handler") {
			t.Fatalf("OnPanic got %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnPanic not called")
	}
	sub.Publish(t, "edge/dev1/cmd/echo/e1", []byte(`{}`))
	if r := decodeReply(t, sub.Next(t, 5*time.Second)); !r.OK {
		t.Fatalf("after a panic: %+v", r)
	}
	if s := c.Stats(); s.Panics != 1 || s.QueuedBytes != 0 || s.MaxQueuedBytes != int64(256+2)<<20 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBusyWhenQueueFull(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	c, _ := startClient(t, mqtt.Options{Brokers: []string{b.URL()}, QueueSize: 1, Workers: 1}, &memOutbox{}, echo{delay: 300 * time.Millisecond})
	waitReady(t, c)
	sub := b.Subscribe(t, "operator", "edge/dev1/reply/#")
	// Every other command names its id only in its JSON envelope: a
	// busy reply and a worker's both go to it.
	for i := range 5 {
		if i%2 == 0 {
			sub.PublishAsync(fmt.Sprintf("edge/dev1/cmd/slow/s%d", i), []byte(`{}`))
		} else {
			sub.PublishAsync("edge/dev1/cmd/slow", fmt.Appendf(nil, `{"id":"s%d"}`, i))
		}
	}
	codes, topics := map[string]int{}, map[string]bool{}
	for range 5 {
		m := sub.Next(t, 10*time.Second)
		topics[m.Topic] = true
		r := decodeReply(t, m)
		if "edge/dev1/reply/"+r.ID != m.Topic {
			t.Errorf("reply %+v on %s", r, m.Topic)
		}
		if r.OK {
			codes["ok"]++
		} else {
			codes[r.Error.Code]++
		}
	}
	if codes["busy"] == 0 || codes["ok"] == 0 || codes["ok"]+codes["busy"] != 5 || len(topics) != 5 {
		t.Fatalf("replies %v on %v", codes, topics)
	}
}

func TestWrongPasswordGivesUpAfterBoundedRetries(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{Users: map[string]string{"agent": "right"}})
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("wrong\n"), 0o600)
	c, stop := startClient(t, mqtt.Options{Brokers: []string{b.URL()}, Username: "agent", PasswordFile: pw, MaxAuthFailures: 3}, &memOutbox{}, echo{})
	deadline := time.Now().Add(10 * time.Second)
	for !c.Stats().GaveUp {
		if time.Now().After(deadline) {
			t.Fatalf("never gave up: %+v", c.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := c.Stats()
	if s.AuthFailures != 3 || s.Connected || !strings.Contains(s.LastError, "not Authorized") && !strings.Contains(s.LastError, "bad user name or password") {
		t.Fatalf("stats %+v", s)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestTLSAndPassword(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{TLS: true, Users: map[string]string{"agent": "s3cret", "op": "op"}})
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	ob := &memOutbox{}
	ob.add("telemetry/events", []byte("over tls"), false)
	sub := b.Subscribe(t, "watcher", "edge/dev1/telemetry/#", "op", "op")
	c, _ := startClient(t, mqtt.Options{Brokers: []string{b.URL()}, Username: "agent", PasswordFile: pw, CAFile: b.CAFile}, ob, echo{})
	waitReady(t, c)
	if m := sub.Next(t, 10*time.Second); string(m.Payload) != "over tls" {
		t.Fatalf("got %v", m)
	}
	// Without the CA the server certificate is not trusted.
	bad, err := mqtt.New(mqtt.Options{Brokers: []string{b.URL()}, Device: "dev2", Username: "agent", PasswordFile: pw,
		CAFile: filepath.Join(t.TempDir(), "missing.pem")}, ob, echo{})
	if err == nil || bad != nil || !strings.Contains(err.Error(), "mqtt.ca_file") {
		t.Fatalf("missing CA: %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, c := range []struct {
		o    mqtt.Options
		want string
	}{
		{mqtt.Options{Device: "d"}, "no broker"},
		{mqtt.Options{Brokers: []string{"ftp://x"}, Device: "d"}, "mqtt.brokers[0]"},
		{mqtt.Options{Brokers: []string{"tcp://x:1"}, Device: "a/b"}, "mqtt.device"},
		{mqtt.Options{Brokers: []string{"tcp://x:1"}, Device: "d", Prefix: "a/#"}, "mqtt.prefix"},
		{mqtt.Options{Brokers: []string{"tcp://x:1"}, Device: "d", CertFile: "c"}, "key_file"},
	} {
		if err := c.o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
	if !errors.Is(mqtt.Options{Device: "d"}.Validate(), mqtt.ErrNotConfigured) {
		t.Error("no broker is not ErrNotConfigured")
	}
}

// The unit always hands the agent a credential file (LoadCredential), which
// the installer creates empty: with no username an empty file means "no
// password", said in the log, and the client connects to an anonymous
// broker. A password with no username, or a missing file, is refused.
func TestEmptyPasswordFileWithoutUsername(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := mqtttest.Start(t, mqtttest.Options{})
	var log lockedBuffer
	o := mqtt.Options{Brokers: []string{b.URL()}, Device: "dev1", PasswordFile: empty,
		Logger: slog.New(slog.NewTextHandler(&log, nil))}
	if err := o.Validate(); err != nil {
		t.Fatalf("empty password file, no username: %v", err)
	}
	c, _ := startClient(t, o, &memOutbox{}, echo{})
	waitReady(t, c)
	if !strings.Contains(log.String(), "connecting without credentials") || !strings.Contains(log.String(), empty) {
		t.Errorf("not said in the log:\n%s", log.String())
	}

	for file, want := range map[string]string{
		secret:                        "holds a password but mqtt.username is empty",
		filepath.Join(dir, "missing"): "needs mqtt.username",
	} {
		o := mqtt.Options{Brokers: []string{b.URL()}, Device: "dev2", PasswordFile: file}
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate %v, want %q", file, err, want)
		}
		if _, err := mqtt.New(o, &memOutbox{}, echo{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: New %v, want %q", file, err, want)
		}
	}
}

// lockedBuffer is a log sink the client's goroutines may write while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
