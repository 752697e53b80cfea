package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// Options configure the client. Zero values mean the documented defaults.
type Options struct {
	// Brokers are tried in order: tcp://host:1883, ssl://host:8883.
	Brokers []string
	// Prefix of every topic. Default "edge".
	Prefix string
	// Device id in every topic; required. [A-Za-z0-9._-], 1-64.
	Device string
	// ClientID defaults to "edge-agent-<device>"; it must stay the same
	// across restarts for the persistent session.
	ClientID string
	// Username and PasswordFile authenticate; the password is read from the
	// file (never the command line), trailing newline removed. Without a
	// username the file must be empty: systemd's unit always hands the
	// agent a credential file, which the installer creates empty, and "no
	// password yet" must not stop the agent; a password with no username
	// to go with it is refused.
	Username     string
	PasswordFile string
	// Password is used when PasswordFile is empty: a secret the process
	// holds (the embedded broker's login for the agent itself).
	Password string
	// CAFile verifies the broker; CertFile and KeyFile authenticate the
	// client. Any of them turns TLS on for ssl:// and tls:// brokers.
	CAFile, CertFile, KeyFile string
	// KeepAlive is the MQTT keepalive. Default 30s. The broker publishes
	// the last will after 1.5× this without a packet.
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt. Default 10s.
	ConnectTimeout time.Duration
	// MinReconnect and MaxReconnect bound the full-jitter exponential
	// backoff between attempts (backoff.go), also after a lost connection.
	// Defaults 1s and 60s.
	MinReconnect, MaxReconnect time.Duration
	// Rand draws the backoff's jitter, in [0,1); nil means math/rand.
	Rand func() float64
	// MaxAuthFailures ends retrying after this many refused logins in a
	// row: a wrong password does not get better by hammering. Default 5.
	MaxAuthFailures int
	// Inflight is how many outbox messages may await acknowledgement.
	// Default 64.
	Inflight int
	// AckTimeout bounds the wait for one acknowledgement before the
	// unacknowledged messages are sent again. Default 30s.
	AckTimeout time.Duration
	// QueueSize bounds queued commands; beyond it commands answer "busy".
	// Default 256.
	QueueSize int
	// Workers run commands concurrently. Default 2.
	Workers int
	// MaxPayload bounds a command's payload. Default 1 MiB.
	MaxPayload int
	// CommandTimeout bounds one command. Default 30s.
	CommandTimeout time.Duration
	// Version goes into the online status.
	Version string
	// OnPanic, when set, is told about a command that panicked (after the
	// panic was turned into an "internal" reply), with the stack.
	OnPanic func(c Command, v any, stack []byte)
	// OnConnect runs after every (re)connection is online (subscribed,
	// status published), on the connection loop: it must not block.
	OnConnect func()
	// Watch subscribes to these absolute topic filters on every
	// connection; each message's topic and payload go to its function, on
	// paho's goroutine: it must not block (hand it over).
	Watch map[string]func(topic string, payload []byte)
	// Logger; nil discards.
	Logger *slog.Logger
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ValidID reports whether s may be a device or request id (one topic level
// with no wildcards or separators).
func ValidID(s string) bool { return idRE.MatchString(s) }

func (o *Options) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	seti := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Prefix == "" {
		o.Prefix = "edge"
	}
	if o.ClientID == "" {
		o.ClientID = "edge-agent-" + o.Device
	}
	set(&o.KeepAlive, 30*time.Second)
	set(&o.ConnectTimeout, 10*time.Second)
	set(&o.MinReconnect, time.Second)
	set(&o.MaxReconnect, time.Minute)
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	set(&o.AckTimeout, 30*time.Second)
	set(&o.CommandTimeout, 30*time.Second)
	seti(&o.MaxAuthFailures, 5)
	seti(&o.Inflight, 64)
	seti(&o.QueueSize, 256)
	seti(&o.Workers, 2)
	seti(&o.MaxPayload, 1<<20)
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Validate checks the options without connecting; messages name the field.
func (o Options) Validate() error {
	var errs []error
	if len(o.Brokers) == 0 {
		errs = append(errs, ErrNotConfigured)
	}
	for i, b := range o.Brokers {
		u, err := url.Parse(b)
		if err != nil || u.Host == "" {
			errs = append(errs, fmt.Errorf("mqtt.brokers[%d]: %q is not a URL like tcp://host:1883", i, b))
			continue
		}
		switch u.Scheme {
		case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
		default:
			errs = append(errs, fmt.Errorf("mqtt.brokers[%d]: scheme %q not one of tcp, ssl, tls, mqtts, ws, wss", i, u.Scheme))
		}
	}
	if !ValidID(o.Device) {
		errs = append(errs, fmt.Errorf("mqtt.device: %q must be 1-64 of [A-Za-z0-9._-]", o.Device))
	}
	if o.Prefix != "" && (strings.ContainsAny(o.Prefix, "#+") || strings.HasPrefix(o.Prefix, "/") || strings.HasSuffix(o.Prefix, "/")) {
		errs = append(errs, fmt.Errorf("mqtt.prefix: %q must not contain wildcards or start/end with '/'", o.Prefix))
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		errs = append(errs, errors.New("mqtt.cert_file and mqtt.key_file go together"))
	}
	if o.MinReconnect < 0 || o.MaxReconnect < o.MinReconnect {
		errs = append(errs, errors.New("mqtt.reconnect_min ≥ 0 and reconnect_max ≥ reconnect_min"))
	}
	if o.PasswordFile != "" && o.Username == "" {
		// Only an empty file may go without a username (see PasswordFile).
		if _, err := o.password(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// password reads PasswordFile; with no username it returns "" for an
// empty file and an error for anything else.
func (o Options) password() (string, error) {
	if o.PasswordFile == "" {
		return o.Password, nil
	}
	b, err := os.ReadFile(o.PasswordFile)
	if err != nil {
		if o.Username == "" {
			return "", fmt.Errorf("mqtt.password_file needs mqtt.username (and %w)", err)
		}
		return "", fmt.Errorf("mqtt.password_file: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if o.Username == "" && pw != "" {
		return "", fmt.Errorf("mqtt.password_file: %s holds a password but mqtt.username is empty: set mqtt.username, or empty the file", o.PasswordFile)
	}
	return pw, nil
}

func (o Options) tlsConfig() (*tls.Config, error) {
	if o.CAFile == "" && o.CertFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.ca_file: %s holds no PEM certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
