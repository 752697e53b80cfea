package mqtttest

// A raw MQTT client for broker tests, written against the MQTT 3.1.1 and
// 5.0 specifications rather than any broker's code: it sends exactly the
// packets a test asks for, when it asks (pipelined SUBSCRIBEs, a PUBLISH
// left unacknowledged, an abrupt close), which a full client library
// hides. Only what the tests use is here: CONNECT (clean or persistent,
// will, credentials), SUBSCRIBE, PUBLISH, PUBACK, DISCONNECT, and reading
// any packet back.

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// Packet types (MQTT 3.1.1 §2.2.1, 5.0 §2.1.2).
const (
	TypeConnect     = 1
	TypeConnack     = 2
	TypePublish     = 3
	TypePuback      = 4
	TypePubrec      = 5
	TypePubrel      = 6
	TypePubcomp     = 7
	TypeSubscribe   = 8
	TypeSuback      = 9
	TypeUnsubscribe = 10
	TypeUnsuback    = 11
	TypeDisconnect  = 14
)

// RawOptions shape a raw connection.
type RawOptions struct {
	// Version is the protocol level: 4 (3.1.1, default) or 5.
	Version byte
	// ClientID; "" asks the broker to assign one (clean sessions only).
	ClientID string
	// Persistent keeps the session after disconnect (3.1.1: clean
	// session 0; 5.0: clean start 0 and a one-hour session expiry).
	Persistent bool
	// KeepAlive in seconds; 0 turns it off.
	KeepAlive uint16
	// Username and Password, sent when Username is set.
	Username, Password string
	// WillTopic, when set, registers a last will with WillPayload, QoS 1,
	// retained when WillRetain.
	WillTopic   string
	WillPayload []byte
	WillRetain  bool
	// TLS, when set, wraps the connection.
	TLS *tls.Config
}

// RawPacket is one packet read from the broker.
type RawPacket struct {
	Type   byte
	Dup    bool
	QoS    byte
	Retain bool
	ID     uint16
	Topic  string
	// Payload of a PUBLISH.
	Payload []byte
	// Codes: a SUBACK's (UNSUBACK's) reason codes, a CONNACK's return
	// code, or an acknowledgement's reason code (5.0, when sent).
	Codes []byte
	// SessionPresent from a CONNACK.
	SessionPresent bool
}

// Raw is one raw connection.
type Raw struct {
	t    testing.TB
	v    byte
	conn net.Conn
	r    *bufio.Reader
}

// ErrRefused is a CONNACK with a non-zero return (reason) code.
var ErrRefused = errors.New("connection refused")

// DialRaw connects to addr (host:port) and waits for a successful CONNACK;
// it fails the test otherwise. The connection is closed when the test ends.
func DialRaw(t testing.TB, addr string, o RawOptions) (*Raw, RawPacket) {
	t.Helper()
	c, ack, err := TryRaw(t, addr, o)
	if err != nil {
		t.Fatalf("raw connect %s: %v", addr, err)
	}
	return c, ack
}

// TryRaw connects and returns the CONNACK; a refusal is ErrRefused with
// the code in the CONNACK, a connection the broker drops is the read
// error.
func TryRaw(t testing.TB, addr string, o RawOptions) (*Raw, RawPacket, error) {
	t.Helper()
	if o.Version == 0 {
		o.Version = 4
	}
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: 5 * time.Second}
	if o.TLS != nil {
		conn, err = tls.DialWithDialer(d, "tcp", addr, o.TLS)
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, RawPacket{}, err
	}
	c := &Raw{t: t, v: o.Version, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { _ = conn.Close() })
	if err := c.write(connectPacket(o)); err != nil {
		return nil, RawPacket{}, err
	}
	ack, err := c.Next(5 * time.Second)
	if err != nil {
		return nil, ack, err
	}
	if ack.Type != TypeConnack {
		return nil, ack, fmt.Errorf("first packet is type %d, not CONNACK", ack.Type)
	}
	if ack.Codes[0] != 0 {
		return nil, ack, fmt.Errorf("%w: code 0x%02x", ErrRefused, ack.Codes[0])
	}
	return c, ack, nil
}

func connectPacket(o RawOptions) []byte {
	var vh []byte
	vh = appendString(vh, "MQTT")
	vh = append(vh, o.Version)
	var flags byte
	if !o.Persistent {
		flags |= 0x02
	}
	if o.WillTopic != "" {
		flags |= 0x04 | 1<<3 // will, QoS 1
		if o.WillRetain {
			flags |= 0x20
		}
	}
	if o.Username != "" {
		flags |= 0x80 | 0x40
	}
	vh = append(vh, flags)
	vh = binary.BigEndian.AppendUint16(vh, o.KeepAlive)
	if o.Version == 5 {
		var props []byte
		if o.Persistent {
			props = append(props, 0x11) // Session Expiry Interval
			props = binary.BigEndian.AppendUint32(props, 3600)
		}
		vh = appendVarint(vh, len(props))
		vh = append(vh, props...)
	}
	vh = appendString(vh, o.ClientID)
	if o.WillTopic != "" {
		if o.Version == 5 {
			vh = appendVarint(vh, 0) // will properties
		}
		vh = appendString(vh, o.WillTopic)
		vh = appendString(vh, string(o.WillPayload))
	}
	if o.Username != "" {
		vh = appendString(vh, o.Username)
		vh = appendString(vh, o.Password)
	}
	return frame(TypeConnect<<4, vh)
}

// Subscribe sends a SUBSCRIBE for filter at qos with packet id id, and
// does not wait for the SUBACK.
func (c *Raw) Subscribe(id uint16, filter string, qos byte) error {
	return c.write(c.SubscribeEncoded(id, filter, qos))
}

// SubscribeEncoded is Subscribe's bytes, to send several in one write.
func (c *Raw) SubscribeEncoded(id uint16, filter string, qos byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	if c.v == 5 {
		b = appendVarint(b, 0)
	}
	b = appendString(b, filter)
	b = append(b, qos)
	return frame(TypeSubscribe<<4|0x02, b)
}

// Write sends bytes as they are (several packets in one write: pipelined).
func (c *Raw) Write(b []byte) error { return c.write(b) }

// Publish sends a PUBLISH (id is ignored at QoS 0).
func (c *Raw) Publish(id uint16, topic string, qos byte, retain bool, payload []byte) error {
	h := byte(TypePublish<<4) | qos<<1
	if retain {
		h |= 0x01
	}
	b := appendString(nil, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	if c.v == 5 {
		b = appendVarint(b, 0)
	}
	b = append(b, payload...)
	return c.write(frame(h, b))
}

// Puback acknowledges a QoS 1 PUBLISH.
func (c *Raw) Puback(id uint16) error {
	return c.write(frame(TypePuback<<4, binary.BigEndian.AppendUint16(nil, id)))
}

// Unsubscribe sends an UNSUBSCRIBE and does not wait for the UNSUBACK.
func (c *Raw) Unsubscribe(id uint16, filter string) error {
	b := binary.BigEndian.AppendUint16(nil, id)
	if c.v == 5 {
		b = appendVarint(b, 0)
	}
	return c.write(frame(TypeUnsubscribe<<4|0x02, appendString(b, filter)))
}

// Pubrel releases a QoS 2 PUBLISH the broker answered with PUBREC.
func (c *Raw) Pubrel(id uint16) error {
	return c.write(frame(TypePubrel<<4|0x02, binary.BigEndian.AppendUint16(nil, id)))
}

// Disconnect sends DISCONNECT (the will is discarded) and closes.
func (c *Raw) Disconnect() {
	b := []byte(nil)
	if c.v == 5 {
		b = []byte{0} // normal disconnection
	}
	_ = c.write(frame(TypeDisconnect<<4, b))
	_ = c.conn.Close()
}

// Close drops the connection without DISCONNECT (the will is sent).
func (c *Raw) Close() { _ = c.conn.Close() }

// Next reads one packet, waiting at most timeout.
func (c *Raw) Next(timeout time.Duration) (RawPacket, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	h, err := c.r.ReadByte()
	if err != nil {
		return RawPacket{}, err
	}
	n, err := readVarint(c.r)
	if err != nil {
		return RawPacket{}, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return RawPacket{}, err
	}
	p := RawPacket{Type: h >> 4}
	bad := fmt.Errorf("malformed packet type %d: % x", p.Type, body)
	switch p.Type {
	case TypeConnack:
		if len(body) < 2 {
			return p, bad
		}
		p.SessionPresent = body[0]&1 == 1
		p.Codes = body[1:2]
	case TypePublish:
		p.Dup, p.QoS, p.Retain = h&0x08 != 0, h>>1&3, h&1 == 1
		topic, rest, ok := readString(body)
		if !ok {
			return p, bad
		}
		p.Topic = topic
		if p.QoS > 0 {
			if len(rest) < 2 {
				return p, bad
			}
			p.ID, rest = binary.BigEndian.Uint16(rest), rest[2:]
		}
		if c.v == 5 {
			if rest, ok = skipProperties(rest); !ok {
				return p, bad
			}
		}
		p.Payload = rest
	case TypeSuback, TypeUnsuback:
		if p.Type == TypeUnsuback && c.v != 5 { // 3.1.1: the id only
			if len(body) < 2 {
				return p, bad
			}
			p.ID = binary.BigEndian.Uint16(body)
			break
		}
		if len(body) < 3 {
			return p, bad
		}
		p.ID = binary.BigEndian.Uint16(body)
		rest, ok := body[2:], true
		if c.v == 5 {
			if rest, ok = skipProperties(rest); !ok {
				return p, bad
			}
		}
		p.Codes = rest
	default:
		if len(body) >= 2 {
			p.ID = binary.BigEndian.Uint16(body)
		}
		if len(body) > 2 {
			p.Codes = body[2:3]
		}
	}
	return p, nil
}

func (c *Raw) write(b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(b)
	return err
}

func frame(h byte, body []byte) []byte {
	return append(appendVarint([]byte{h}, len(body)), body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendVarint(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func readVarint(r io.ByteReader) (int, error) {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n += int(d&0x7f) * mul
		if d&0x80 == 0 {
			return n, nil
		}
		mul *= 128
	}
	return 0, errors.New("malformed remaining length")
}

func readString(b []byte) (string, []byte, bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

func skipProperties(b []byte) ([]byte, bool) {
	n, mul, i := 0, 1, 0
	for ; i < len(b) && i < 4; i++ {
		n += int(b[i]&0x7f) * mul
		mul *= 128
		if b[i]&0x80 == 0 {
			break
		}
	}
	if i >= len(b) || len(b) < i+1+n {
		return nil, false
	}
	return b[i+1+n:], true
}
