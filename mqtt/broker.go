package mqtt

// The local broker: with no broker configured the agent serves MQTT
// itself, on loopback, so local programs (and `edge-agent call`) can talk
// to it at once, as on a device-local bus (the Greengrass pattern). It is
// mochi-mqtt, embedded: retained messages and last wills work as on any
// broker; they live in memory (the agent's own retained status is
// republished on every connect).

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// ErrAddrInUse means something already listens on the local broker's
// address (a mosquitto serving Home Assistant, say): connect to it as a
// client instead.
var ErrAddrInUse = errors.New("address in use")

// LocalBroker is the embedded broker.
type LocalBroker struct {
	srv  *mochi.Server
	addr string
}

// LocalOptions shape the local broker. Zero values mean the documented
// defaults.
type LocalOptions struct {
	// Addr is host:port; port 0 picks a free one.
	Addr string
	// Logger; nil discards.
	Logger *slog.Logger
}

// ServeLocal serves MQTT on addr (host:port; port 0 picks a free one). It
// accepts every client: keep addr on loopback unless the network around
// the device is trusted (the agent warns otherwise).
func ServeLocal(o LocalOptions) (*LocalBroker, error) {
	addr, log := o.Addr, o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Listen first, so "in use" is told apart from other failures.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("local broker on %s: %w", addr, ErrAddrInUse)
		}
		return nil, fmt.Errorf("local broker on %s: %w", addr, err)
	}
	srv := mochi.New(&mochi.Options{InlineClient: false, Logger: log.With("component", "local-broker")})
	if err := srv.AddHook(newPacketIDs(), nil); err != nil {
		_ = ln.Close()
		return nil, err
	}
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		_ = ln.Close()
		return nil, err
	}
	if err := srv.AddListener(listeners.NewNet("local", ln)); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("local broker on %s: %w", addr, err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("local broker on %s: %w", addr, err)
	}
	return &LocalBroker{srv: srv, addr: ln.Addr().String()}, nil
}

// Addr is where it listens (host:port).
func (b *LocalBroker) Addr() string { return b.addr }

// URL is the URL clients connect to.
func (b *LocalBroker) URL() string { return "tcp://" + b.addr }

// Close disconnects every client and stops listening.
func (b *LocalBroker) Close() error { return b.srv.Close() }

// IsLoopback reports whether addr's host is a loopback address (or
// "localhost").
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
