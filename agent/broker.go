package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/edge-agent/edge-agent/mqtt"
)

// embeddedBroker is the MQTT broker the agent serves itself when no
// broker is configured ([mqtt] local_listen). b is set by the start and
// cleared by close, both before and after the agent's goroutines run;
// info is read by the status at any time.
type embeddedBroker struct {
	b    *mqtt.LocalBroker
	info atomic.Pointer[mqtt.LocalInfo]
}

// start serves MQTT on [mqtt] local_listen when no broker is
// configured, and returns the broker to connect to (its own, or the one
// already listening there) and the agent's login there. With local_listen
// off, or when it cannot listen, the agent runs without MQTT (and says
// why); a users file or certificate that cannot be read is an error.
func (e *embeddedBroker) start(o mqtt.LocalOptions, log *slog.Logger) (brokers []string, user, password string, err error) {
	if o.Addr == "" {
		return nil, "", "", nil
	}
	o.Logger = log
	b, err := mqtt.ServeLocal(o)
	switch {
	case errors.Is(err, mqtt.ErrAddrInUse):
		log.Info("mqtt: something already listens on local_listen; connecting to it as a client", "addr", o.Addr)
		return []string{"tcp://" + o.Addr}, "", "", nil
	case errors.Is(err, mqtt.ErrOpenBroker), err != nil && o.UsersFile+o.CertFile != "": // asked-for protection that cannot be had
		return nil, "", "", fmt.Errorf("mqtt: %w", err)
	case err != nil:
		log.Error("mqtt: no local broker; running without MQTT", "addr", o.Addr, "err", err)
		return nil, "", "", nil
	}
	info := b.Info()
	if info.Auth == "anonymous" {
		log.Warn("mqtt: the local broker listens beyond loopback and admits anyone (local_allow_anonymous)", "addr", info.Addr)
	}
	log.Info("mqtt: serving a local broker", "addr", info.Addr, "auth", info.Auth, "tls", info.TLS)
	e.b = b
	e.info.Store(&info)
	user, password = b.Login()
	return []string{b.URL()}, user, password, nil
}

// close stops the broker, if one was served (after the agent's own
// client has gone). Safe to call more than once.
func (e *embeddedBroker) close() error {
	if e.b == nil {
		return nil
	}
	err := e.b.Close()
	e.b = nil
	return err
}
