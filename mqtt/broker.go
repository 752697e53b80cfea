package mqtt

// The local broker: with no broker configured the agent serves MQTT
// itself, so local programs (and `edge-agent call`) can talk to it at
// once, as on a device-local bus (the Greengrass pattern). It is
// mochi-mqtt, embedded: retained messages and last wills work as on any
// broker; they live in memory (the agent's own retained status is
// republished on every connect). On loopback it is open; beyond loopback
// it wants a password file (brokerauth.go) unless anonymous access is
// asked for by name, and it speaks TLS when given a certificate.

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Errors of ServeLocal.
var (
	// ErrAddrInUse means something already listens on the local broker's
	// address (a mosquitto serving Home Assistant, say): connect to it as a
	// client instead.
	ErrAddrInUse = errors.New("address in use")
	// ErrOpenBroker: a broker beyond loopback with no password file and
	// anonymous access not asked for.
	ErrOpenBroker = errors.New("listening beyond loopback needs a users file (or allow_anonymous)")
)

// LocalOptions shape the local broker. Zero values mean the documented
// defaults.
type LocalOptions struct {
	// Addr is host:port; port 0 picks a free one.
	Addr string
	// UsersFile is a mosquitto password file (mosquitto_passwd writes it);
	// when set, every client but the agent logs in with a user of it.
	UsersFile string
	// Roles: user → RoleCommand or RoleRead; users not named read only.
	Roles map[string]Role
	// AllowAnonymous lets clients without a login in: able to command
	// with no UsersFile, read-only beside one. Needed to listen beyond
	// loopback without a UsersFile; on loopback without one it is implied.
	AllowAnonymous bool
	// CertFile and KeyFile (PEM) serve MQTT over TLS on Addr.
	CertFile, KeyFile string
	// Prefix and Device name the command topics the roles guard:
	// <prefix>/<device>/cmd/... Prefix defaults to "edge".
	Prefix, Device string
	// Logger; nil discards.
	Logger *slog.Logger
}

// LocalInfo says how the local broker admits clients (the status shows it).
type LocalInfo struct {
	Addr string `json:"addr"`
	TLS  bool   `json:"tls"`
	// Auth: "password" (a users file), "anonymous" (open beyond loopback,
	// asked for by allow_anonymous) or "loopback" (open, on loopback only).
	Auth string `json:"auth"`
	// AnonymousAllowed: clients without a login get in.
	AnonymousAllowed bool `json:"anonymous_allowed"`
}

// LocalBroker is the embedded broker.
type LocalBroker struct {
	srv     *mochi.Server
	info    LocalInfo
	selfURL string // where the agent's own client connects
	selfPW  string
}

// ServeLocal serves MQTT on o.Addr. Beyond loopback it refuses to start
// without o.UsersFile unless o.AllowAnonymous (ErrOpenBroker).
func ServeLocal(o LocalOptions) (*LocalBroker, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Prefix == "" {
		o.Prefix = "edge"
	}
	loopback := IsLoopback(o.Addr)
	if !loopback && o.UsersFile == "" && !o.AllowAnonymous {
		return nil, fmt.Errorf("local broker on %s: %w", o.Addr, ErrOpenBroker)
	}
	pw := make([]byte, 24)
	_, _ = rand.Read(pw)
	auth := &brokerAuth{roles: o.Roles, anonymous: o.AllowAnonymous || o.UsersFile == "" && loopback,
		agentPW: []byte(hex.EncodeToString(pw)), ownPrefix: o.Prefix + "/", cmdPrefix: o.Prefix + "/" + o.Device + "/cmd/"}
	info := LocalInfo{TLS: o.CertFile != "", AnonymousAllowed: auth.anonymous, Auth: "loopback"}
	switch {
	case o.UsersFile != "":
		users, err := ReadUsers(o.UsersFile)
		if err != nil {
			return nil, fmt.Errorf("local broker: %w", err)
		}
		auth.users, info.Auth = users, "password"
	case !loopback:
		info.Auth = "anonymous"
	}
	var tlsCfg *tls.Config
	if o.CertFile != "" || o.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("local broker: cert_file/key_file: %w", err)
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	// Listen first, so "in use" is told apart from other failures.
	ln, err := listen(o.Addr)
	if err != nil {
		return nil, err
	}
	info.Addr = ln.Addr().String()
	b := &LocalBroker{info: info, selfURL: "tcp://" + info.Addr, selfPW: string(auth.agentPW)}
	lns := []net.Listener{ln}
	if tlsCfg != nil {
		lns[0] = tls.NewListener(ln, tlsCfg)
	}
	if tlsCfg != nil || !loopback {
		// The agent's own client stays on loopback and in plain TCP (it
		// has no CA for the certificate); the same logins apply there.
		self, err := listen("127.0.0.1:0")
		if err != nil {
			_ = ln.Close()
			return nil, err
		}
		lns = append(lns, self)
		b.selfURL = "tcp://" + self.Addr().String()
	}
	closeAll := func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}
	srv := mochi.New(&mochi.Options{InlineClient: false, Logger: log.With("component", "local-broker")})
	// publishOrder goes last: it must see only publishes that the hooks
	// before it let through.
	for _, h := range []mochi.Hook{newPacketIDs(), auth, newPublishOrder(log)} {
		if err := srv.AddHook(h, nil); err != nil {
			closeAll()
			return nil, err
		}
	}
	for i, l := range lns {
		if err := srv.AddListener(listeners.NewNet(fmt.Sprint("local", i), l)); err != nil {
			closeAll()
			return nil, fmt.Errorf("local broker on %s: %w", o.Addr, err)
		}
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("local broker on %s: %w", o.Addr, err)
	}
	b.srv = srv
	return b, nil
}

func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("local broker on %s: %w", addr, ErrAddrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("local broker on %s: %w", addr, err)
	}
	return ln, nil
}

// Addr is where it listens (host:port).
func (b *LocalBroker) Addr() string { return b.info.Addr }

// URL is where the agent's own client connects: Addr, or a loopback
// listener of its own when Addr is beyond loopback or TLS.
func (b *LocalBroker) URL() string { return b.selfURL }

// Login is the agent's own user and password on this broker, made fresh
// at every start.
func (b *LocalBroker) Login() (user, password string) { return agentUser, b.selfPW }

// Info says how it admits clients.
func (b *LocalBroker) Info() LocalInfo { return b.info }

// Close disconnects every client and stops listening.
//
// mochi's Server.Close finds each listener's clients with
// Clients.GetByListener, which takes the clients' read lock twice (it calls
// Len inside): a client connecting at that moment queues for the write lock
// between the two and Close deadlocks (seen in make test). So the listeners
// are closed first with a closer that takes the clients under one read lock
// (GetAll); Server.Close then finds them closed (a Net listener runs its
// closer once) and only stops the hooks.
func (b *LocalBroker) Close() error {
	b.srv.Listeners.CloseAll(func(listener string) {
		for _, cl := range b.srv.Clients.GetAll() {
			if cl.Net.Listener == listener && !cl.Closed() {
				_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
	})
	return b.srv.Close()
}

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
