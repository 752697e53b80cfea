package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// SchemaVersion versions every payload this package writes.
const SchemaVersion = 1

// Message is one outbox message: a topic below <prefix>/<device>/.
type Message struct {
	Seq     uint64
	Topic   string
	Payload []byte
	Retain  bool
}

// Outbox is the durable queue telemetry leaves from, oldest first.
type Outbox interface {
	Pending(after uint64, limit int) ([]Message, error)
	Ack(seqs ...uint64) error
}

// Command is one command received.
type Command struct {
	Verb    string
	ID      string // request id; replies go to reply/<ID>
	Model   string // from the topic, for binary payloads
	Payload []byte
	Binary  bool // the payload is raw bytes, not JSON
	// Received is when the message arrived (zero for commands that did not
	// come over MQTT): latencies count the queue from it.
	Received time.Time
}

// Commander runs commands. Its error's Code() (if any) is the reply's code.
type Commander interface {
	Command(ctx context.Context, c Command) (any, error)
}

// Stats count what the client did.
type Stats struct {
	Connected       bool   `json:"connected"`
	Connects        uint64 `json:"connects"`
	ConnectFailures uint64 `json:"connect_failures"`
	AuthFailures    uint64 `json:"auth_failures"`
	GaveUp          bool   `json:"gave_up"`
	LastError       string `json:"last_error,omitempty"`
	Published       uint64 `json:"published"`
	Acked           uint64 `json:"acked"`
	Resent          uint64 `json:"resent"`
	Commands        uint64 `json:"commands"`
	Rejected        uint64 `json:"rejected"`
	Busy            uint64 `json:"busy"`
	Panics          uint64 `json:"panics"`
	RepliesDropped  uint64 `json:"replies_dropped"`
	// QueuedBytes is the payload bytes of commands queued or running now;
	// MaxQueuedBytes its bound: (QueueSize + Workers) × MaxPayload.
	QueuedBytes    int64 `json:"queued_bytes"`
	MaxQueuedBytes int64 `json:"max_queued_bytes"`
}

// Client is the agent's MQTT side. Create with New, then Run.
type Client struct {
	o      Options
	log    *slog.Logger
	outbox Outbox
	cmds   Commander
	pc     paho.Client

	notify  chan struct{} // outbox has news (cap 1)
	queue   chan Command  // commands for the workers
	rejects chan replyOut // replies the handler could not queue work for
	lost    chan error    // connection lost (cap 1)
	ready   chan struct{} // closed at the first connection
	once    sync.Once
	running atomic.Bool

	// connMu guards connDone: closed when the current connection ends.
	connMu   sync.Mutex
	connDone chan struct{}

	// pubMu is held while a batch is handed to paho and taken by the
	// connection loop before it reconnects: a Publish blocked on a dead
	// connection would otherwise go out on the next one, ahead of the
	// older messages the outbox is about to resend.
	pubMu sync.Mutex

	// statusMu orders the retained status's publishes against the stop:
	// once Run published "offline" (closing), no "online" follows it.
	statusMu sync.Mutex
	closing  bool

	// statsMu guards stats and status.
	statsMu sync.Mutex
	stats   Stats
	sentMax uint64         // highest seq ever published, to count resends
	status  map[string]any // extra fields of the retained online status
}

type replyOut struct {
	id     string
	result any
	err    error
}

// New checks the options and prepares the client; it does not connect.
func New(o Options, outbox Outbox, cmds Commander) (*Client, error) {
	o.defaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	pw, err := o.password()
	if err != nil {
		return nil, err
	}
	if o.Username == "" && o.PasswordFile != "" {
		o.Logger.Info("mqtt: the password file is empty and no username is set: connecting without credentials", "password_file", o.PasswordFile)
	}
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return nil, err
	}
	c := &Client{o: o, log: o.Logger, outbox: outbox, cmds: cmds,
		notify: make(chan struct{}, 1), queue: make(chan Command, o.QueueSize), rejects: make(chan replyOut, max(64, o.QueueSize)),
		lost: make(chan error, 1), ready: make(chan struct{}), connDone: make(chan struct{})}
	close(c.connDone) // not connected yet

	po := paho.NewClientOptions()
	for _, b := range o.Brokers {
		po.AddBroker(b)
	}
	po.SetClientID(o.ClientID).
		SetCleanSession(false).  // keep command subscriptions and queued commands across reconnects
		SetAutoReconnect(false). // the connection loop reconnects, with its own backoff and auth limit
		SetConnectRetry(false).
		SetKeepAlive(o.KeepAlive).
		SetConnectTimeout(o.ConnectTimeout).
		SetWriteTimeout(min(o.ConnectTimeout, 2*time.Second)). // bounds a Publish blocked on a dead connection
		SetOrderMatters(true).
		// Commands queued in the persistent session arrive right after
		// CONNACK, before Subscribe has registered its route: without a
		// default handler paho drops them.
		SetDefaultPublishHandler(c.onMessage).
		SetStore(newResendFreeStore()).
		SetBinaryWill(c.topic("status"), statusPayload("offline", o.Version, nil), 1, true).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case c.lost <- err:
			default:
			}
		})
	if o.Username != "" {
		po.SetUsername(o.Username).SetPassword(pw)
	}
	if tlsCfg != nil {
		po.SetTLSConfig(tlsCfg)
	}
	c.pc = paho.NewClient(po)
	return c, nil
}

func (c *Client) topic(suffix string) string { return c.o.Prefix + "/" + c.o.Device + "/" + suffix }

func statusPayload(status, version string, extra map[string]any) []byte {
	m := map[string]any{}
	for k, v := range extra {
		m[k] = v
	}
	m["schema"], m["status"], m["agent"] = SchemaVersion, status, version
	b, _ := json.Marshal(m)
	return b
}

// SetStatus sets extra fields of the retained "online" status (say, what
// each model is ready for) and publishes it now when connected; every
// later connection publishes it too. schema, status and agent are the
// client's own.
func (c *Client) SetStatus(fields map[string]any) {
	c.statsMu.Lock()
	c.status = fields
	c.statsMu.Unlock()
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if !c.closing && c.pc.IsConnectionOpen() {
		c.publishStatus()
	}
}

// publishStatus publishes the retained online status without waiting: it
// is called from the connection loop and from SetStatus's callers, never
// from paho's handlers.
func (c *Client) publishStatus() paho.Token {
	c.statsMu.Lock()
	b := statusPayload("online", c.o.Version, c.status)
	c.statsMu.Unlock()
	return c.pc.Publish(c.topic("status"), 1, true, b)
}

// Notify tells the flusher the outbox has new messages.
func (c *Client) Notify() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Ready is closed once the first connection is up.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Stats returns the counters.
func (c *Client) Stats() Stats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	s := c.stats
	s.Connected = c.pc.IsConnectionOpen()
	s.MaxQueuedBytes = int64(c.o.QueueSize+c.o.Workers) * int64(c.o.MaxPayload)
	return s
}

func (c *Client) count(f func(*Stats)) {
	c.statsMu.Lock()
	f(&c.stats)
	c.statsMu.Unlock()
}

// Run connects, flushes the outbox, serves commands, and on ctx's end
// publishes the retained "offline" status and disconnects. It returns when
// every goroutine it started has stopped.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("mqtt: Run called twice")
	}
	var wg sync.WaitGroup
	spawn := func(f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	workCtx, stopWork := context.WithCancel(context.Background())
	var workers sync.WaitGroup
	for range c.o.Workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			c.work(workCtx)
		}()
	}
	spawn(c.flush)
	spawn(c.replyRejects)
	c.connectLoop(ctx)
	wg.Wait()

	// Commands already queued are answered "shutting down"; a running one
	// finishes within its timeout.
	stopWork()
	workers.Wait()
	c.statusMu.Lock()
	c.closing = true
	var offline paho.Token
	if c.pc.IsConnectionOpen() {
		offline = c.pc.Publish(c.topic("status"), 1, true, statusPayload("offline", c.o.Version, nil))
	}
	c.statusMu.Unlock()
	if offline != nil {
		offline.WaitTimeout(2 * time.Second)
		c.pc.Disconnect(250)
	}
	return nil
}

// connectLoop keeps a connection until ctx ends, backing off between
// attempts and giving up after MaxAuthFailures refused logins in a row.
func (c *Client) connectLoop(ctx context.Context) {
	retry := backoff{min: c.o.MinReconnect, max: c.o.MaxReconnect, rand: c.o.Rand}
	authFailures := 0
	for ctx.Err() == nil {
		// Wait for any batch being handed to the previous connection to
		// finish: the lock is the barrier, nothing is done under it.
		c.pubMu.Lock()
		//lint:ignore SA2001 an intentional barrier
		c.pubMu.Unlock()
		err := wait(ctx, c.pc.Connect(), c.o.ConnectTimeout+time.Second)
		if err == nil {
			retry.reset()
			authFailures = 0
			if err := c.online(ctx); err != nil {
				c.log.Warn("mqtt: after connect", "err", err)
			}
			select {
			case <-ctx.Done():
				c.down()
				return
			case err := <-c.lost:
				c.down()
				c.count(func(s *Stats) { s.LastError = err.Error() })
				// Everyone connected to that broker lost it at once: the
				// first retry is spread over [0, min_reconnect) too.
				wait := retry.next()
				c.log.Warn("mqtt: connection lost", "err", err, "retry_in", wait)
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		auth := errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised)
		c.count(func(s *Stats) {
			s.ConnectFailures++
			s.LastError = err.Error()
			if auth {
				s.AuthFailures++
			}
		})
		if auth {
			authFailures++
			if authFailures >= c.o.MaxAuthFailures {
				c.log.Error("mqtt: broker refused the credentials; giving up until restart", "attempts", authFailures, "err", err)
				c.count(func(s *Stats) { s.GaveUp = true })
				<-ctx.Done()
				return
			}
		}
		wait := retry.next()
		c.log.Warn("mqtt: connect failed", "broker", c.o.Brokers, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// online runs on every (re)connection: subscribe to commands, say online.
func (c *Client) online(ctx context.Context) error {
	c.connMu.Lock()
	c.connDone = make(chan struct{})
	c.connMu.Unlock()
	c.count(func(s *Stats) { s.Connects++ })
	c.log.Info("mqtt: connected", "client_id", c.o.ClientID)
	c.Notify()
	// Ready once the broker holds the retained "online": whoever
	// subscribes after Ready finds it.
	defer c.once.Do(func() { close(c.ready) })
	if err := wait(ctx, c.pc.Subscribe(c.topic("cmd/#"), 1, c.onMessage), c.o.ConnectTimeout); err != nil {
		return fmt.Errorf("subscribe to commands: %w", err)
	}
	if err := wait(ctx, c.publishStatus(), c.o.ConnectTimeout); err != nil {
		return fmt.Errorf("publish online status: %w", err)
	}
	for topic, f := range c.o.Watch {
		handler := func(_ paho.Client, m paho.Message) { f(m.Topic(), m.Payload()) }
		if err := wait(ctx, c.pc.Subscribe(topic, 1, handler), c.o.ConnectTimeout); err != nil {
			return fmt.Errorf("subscribe to %s: %w", topic, err)
		}
	}
	if c.o.OnConnect != nil {
		c.o.OnConnect()
	}
	return nil
}

// PublishNow publishes payload to an absolute topic (outside the device's
// own, e.g. Home Assistant's discovery) while connected, and waits for the
// broker's acknowledgement until ctx ends. It does not go through the
// outbox: use it for what is published again on every connection.
func (c *Client) PublishNow(ctx context.Context, topic string, retain bool, payload []byte) error {
	if !c.pc.IsConnectionOpen() {
		return ErrNotConnected
	}
	return wait(ctx, c.pc.Publish(topic, 1, retain, payload), c.o.ConnectTimeout)
}

// down marks the current connection as ended for the flusher.
func (c *Client) down() {
	c.connMu.Lock()
	if !closed(c.connDone) {
		close(c.connDone)
	}
	c.connMu.Unlock()
}

// connection returns a channel closed when the current connection ends,
// waiting for one to be up.
func (c *Client) connection(ctx context.Context) (<-chan struct{}, bool) {
	for {
		c.connMu.Lock()
		done := c.connDone
		c.connMu.Unlock()
		if !closed(done) {
			return done, true
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// flush publishes the outbox in order, oldest first, and removes messages
// only once acknowledged. Whatever is not acknowledged (a dropped
// connection, a lost ack) is sent again from the oldest: duplicates are
// possible and carry the same sequence number.
func (c *Client) flush(ctx context.Context) {
	for {
		done, ok := c.connection(ctx)
		if !ok {
			return
		}
		msgs, err := c.outbox.Pending(0, c.o.Inflight)
		if err != nil {
			c.log.Error("mqtt: outbox unreadable", "err", err)
			msgs = nil
		}
		if len(msgs) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-c.notify:
			case <-done:
			case <-time.After(5 * time.Second):
			}
			continue
		}
		tokens := make([]paho.Token, 0, len(msgs))
		c.pubMu.Lock()
		for _, m := range msgs {
			if closed(done) {
				break
			}
			tokens = append(tokens, c.pc.Publish(c.topic(m.Topic), 1, m.Retain, m.Payload))
		}
		c.pubMu.Unlock()
		msgs = msgs[:len(tokens)]
		c.statsMu.Lock()
		for _, m := range msgs {
			c.stats.Published++
			if m.Seq <= c.sentMax {
				c.stats.Resent++
			}
			c.sentMax = max(c.sentMax, m.Seq)
		}
		c.statsMu.Unlock()
		acked := make([]uint64, 0, len(msgs))
		timeout := time.NewTimer(c.o.AckTimeout)
	wait:
		for i, t := range tokens {
			select {
			case <-t.Done():
				if t.Error() != nil {
					break wait
				}
				acked = append(acked, msgs[i].Seq)
			case <-done:
				break wait
			case <-timeout.C:
				c.log.Warn("mqtt: acknowledgement timed out; sending again", "seq", msgs[i].Seq)
				break wait
			case <-ctx.Done():
				break wait
			}
		}
		timeout.Stop()
		if len(acked) > 0 {
			if err := c.outbox.Ack(acked...); err != nil {
				c.log.Error("mqtt: outbox ack not stored (messages will repeat)", "err", err)
			}
			c.count(func(s *Stats) { s.Acked += uint64(len(acked)) })
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// onMessage is paho's handler: parse the topic and queue, never block or
// publish. The JSON envelope's id is read by the worker (envelope): paho
// calls this on its one router, and a megabyte of JSON takes it
// milliseconds to scan, during which no other message is handled, PUBACKs
// included. Only a command that finds the queue full has its envelope
// read here, to address the busy reply: the payload is not held for it,
// and under a flood a slower router is the back-pressure.
func (c *Client) onMessage(_ paho.Client, m paho.Message) {
	cmd, err := c.parseTopic(m.Topic(), m.Payload())
	c.count(func(s *Stats) { s.Commands++ })
	if err != nil {
		c.count(func(s *Stats) { s.Rejected++ })
		c.reject(replyOut{id: cmd.ID, err: err})
		return
	}
	c.count(func(s *Stats) { s.QueuedBytes += int64(len(cmd.Payload)) })
	select {
	case c.queue <- cmd:
	default:
		c.count(func(s *Stats) { s.QueuedBytes -= int64(len(cmd.Payload)) })
		if err := envelope(&cmd); err != nil {
			c.count(func(s *Stats) { s.Rejected++ })
			c.reject(replyOut{id: cmd.ID, err: err})
			return
		}
		c.count(func(s *Stats) { s.Busy++ })
		c.reject(replyOut{id: cmd.ID, err: ErrBusy})
	}
}

func (c *Client) reject(r replyOut) {
	select {
	case c.rejects <- r:
	default:
		c.count(func(s *Stats) { s.RepliesDropped++ })
	}
}

// parseTopic reads cmd/<verb>[/<id>[/<model>]] and checks the payload's
// size and kind, without reading a JSON payload (see envelope).
func (c *Client) parseTopic(topic string, payload []byte) (Command, error) {
	rest, ok := strings.CutPrefix(topic, c.topic("cmd/"))
	if !ok {
		return Command{}, ErrBadRequest
	}
	levels := strings.Split(rest, "/")
	cmd := Command{Verb: levels[0], Received: time.Now()}
	if len(levels) > 1 {
		if !ValidID(levels[1]) {
			return cmd, ErrBadRequestID
		}
		cmd.ID = levels[1]
	}
	if len(levels) > 2 {
		cmd.Model = levels[2]
	}
	if len(levels) > 3 || !ValidID(cmd.Verb) {
		return cmd, &Error{"bad_request", fmt.Sprintf("bad command topic %q", rest)}
	}
	if len(payload) > c.o.MaxPayload {
		return cmd, &Error{ErrTooLarge.code, fmt.Sprintf("%d bytes, limit %d", len(payload), c.o.MaxPayload)}
	}
	trimmed := strings.TrimLeft(string(payload[:min(len(payload), 16)]), " \t\r\n")
	if !strings.HasPrefix(trimmed, "{") {
		if len(payload) > 0 && cmd.ID == "" {
			return cmd, &Error{"bad_request", "a binary payload needs the request id in the topic: cmd/<verb>/<id>[/<model>]"}
		}
		cmd.Payload, cmd.Binary = payload, len(payload) > 0
		return cmd, nil
	}
	cmd.Payload = payload
	return cmd, nil
}

// envelope reads a JSON command's id into cmd (a binary or empty payload
// has none): it must be a valid id, and the topic's if both name one.
func envelope(cmd *Command) error {
	if cmd.Binary || len(cmd.Payload) == 0 {
		return nil
	}
	var env struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(cmd.Payload, &env); err != nil {
		return &Error{"bad_request", "malformed JSON: " + err.Error()}
	}
	switch {
	case env.ID != "" && !ValidID(env.ID):
		return ErrBadRequestID
	case env.ID != "" && cmd.ID != "" && env.ID != cmd.ID:
		return &Error{"bad_request", "request id differs between topic and payload"}
	case env.ID != "":
		cmd.ID = env.ID
	}
	return nil
}

// work runs queued commands until ctx ends, then answers what is left.
func (c *Client) work(ctx context.Context) {
	for {
		select {
		case cmd := <-c.queue:
			if ctx.Err() != nil {
				c.refuse(cmd, ErrShuttingDown)
				continue
			}
			if err := envelope(&cmd); err != nil {
				c.count(func(s *Stats) { s.Rejected++ })
				c.refuse(cmd, err)
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, c.o.CommandTimeout)
			res, err := c.run(cctx, cmd)
			cancel()
			c.count(func(s *Stats) { s.QueuedBytes -= int64(len(cmd.Payload)) })
			c.reply(replyOut{id: cmd.ID, result: res, err: err})
		case <-ctx.Done():
			for {
				select {
				case cmd := <-c.queue:
					c.refuse(cmd, ErrShuttingDown)
				default:
					return
				}
			}
		}
	}
}

// refuse answers a queued command without running it, at the id its
// envelope names (a malformed envelope is answered as such).
func (c *Client) refuse(cmd Command, err error) {
	if e := envelope(&cmd); e != nil {
		err = e
	}
	c.count(func(s *Stats) { s.QueuedBytes -= int64(len(cmd.Payload)) })
	c.reply(replyOut{id: cmd.ID, err: err})
}

// run runs one command; a panic in it becomes an "internal" reply (and a
// log line with the stack) instead of taking the device down.
func (c *Client) run(ctx context.Context, cmd Command) (res any, err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		stack := debug.Stack()
		res, err = nil, &Error{"internal", fmt.Sprintf("command %q failed inside the agent (a bug; see its log)", cmd.Verb)}
		c.count(func(s *Stats) { s.Panics++ })
		c.log.Error("mqtt: command panicked", "verb", cmd.Verb, "id", cmd.ID, "panic", v, "stack", string(stack))
		if c.o.OnPanic != nil {
			c.o.OnPanic(cmd, v, stack)
		}
	}()
	return c.cmds.Command(ctx, cmd)
}

func (c *Client) replyRejects(ctx context.Context) {
	for {
		select {
		case r := <-c.rejects:
			c.reply(r)
		case <-ctx.Done():
			return
		}
	}
}

// Reply is the JSON published on reply/<id>.
type Reply struct {
	Schema int         `json:"schema"`
	ID     string      `json:"id,omitempty"`
	OK     bool        `json:"ok"`
	Result any         `json:"result,omitempty"`
	Error  *ReplyError `json:"error,omitempty"`
}

// ReplyError is a failed command's stable code and message.
type ReplyError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// reply publishes to reply/<id>, or reply/invalid when the command had no
// usable id. Replies are not telemetry: they skip the outbox.
func (c *Client) reply(r replyOut) {
	rep := Reply{Schema: SchemaVersion, ID: r.id, OK: r.err == nil, Result: r.result}
	if r.err != nil {
		rep.Result = nil
		rep.Error = &ReplyError{Code: CodeOf(r.err), Message: r.err.Error()}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		b, _ = json.Marshal(Reply{Schema: SchemaVersion, ID: r.id, Error: &ReplyError{Code: "internal", Message: err.Error()}})
	}
	id := r.id
	if id == "" {
		id = "invalid"
	}
	t := c.pc.Publish(c.topic("reply/"+id), 1, false, b)
	if !t.WaitTimeout(c.o.AckTimeout) || t.Error() != nil {
		c.count(func(s *Stats) { s.RepliesDropped++ })
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func wait(ctx context.Context, t paho.Token, timeout time.Duration) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("mqtt: no answer within %v", timeout)
	}
}
