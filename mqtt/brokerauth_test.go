package mqtt_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
)

// writeUsers writes a password file with mosquitto's own mosquitto_passwd.
func writeUsers(t *testing.T, hashing string, users map[string]string) string {
	t.Helper()
	tool, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Fatalf("mosquitto_passwd not installed (make test installs mosquitto): %v", err)
	}
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for u, p := range users {
		if out, err := exec.Command(tool, "-H", hashing, "-b", path, u, p).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v %s", err, out)
		}
	}
	return path
}

// The password file is read as mosquitto_passwd writes it: PBKDF2-SHA512
// ($7$, the default) and the older salted SHA-512 ($6$).
func TestUsersFileFromMosquittoPasswd(t *testing.T) {
	for _, hashing := range []string{"sha512-pbkdf2", "sha512"} {
		t.Run(hashing, func(t *testing.T) {
			path := writeUsers(t, hashing, map[string]string{"ha": "kitchen light", "grafana": "pa:ss$word"})
			data, _ := os.ReadFile(path)
			want := map[string]string{"sha512-pbkdf2": ":$7$", "sha512": ":$6$"}[hashing]
			if !strings.Contains(string(data), want) {
				t.Fatalf("mosquitto_passwd -H %s wrote %s", hashing, data)
			}
			users, err := mqtt.ReadUsers(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				user, pw string
				ok       bool
			}{
				{"ha", "kitchen light", true},
				{"grafana", "pa:ss$word", true},
				{"ha", "kitchen light ", false},
				{"ha", "pa:ss$word", false},
				{"nobody", "kitchen light", false},
			} {
				if got := users.Check(c.user, []byte(c.pw)); got != c.ok {
					t.Errorf("Check(%q, %q) = %v, want %v", c.user, c.pw, got, c.ok)
				}
			}
		})
	}
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, []byte("ha:secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := mqtt.ReadUsers(plain); err == nil {
		t.Fatal("a plain-text password file was accepted")
	}
}

// "Beyond loopback" in these tests: the broker listens on 0.0.0.0 and the
// clients connect through 127.0.0.1 (no traffic leaves the machine).
func loopbackAddr(t *testing.T, b *mqtt.LocalBroker) string {
	t.Helper()
	_, port, err := net.SplitHostPort(b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

func TestLocalBrokerBeyondLoopbackWantsLogins(t *testing.T) {
	if _, err := mqtt.ServeLocal(mqtt.LocalOptions{Addr: "0.0.0.0:0"}); !errors.Is(err, mqtt.ErrOpenBroker) {
		t.Fatalf("open broker on 0.0.0.0 started: %v", err)
	}
	b, err := mqtt.ServeLocal(mqtt.LocalOptions{Addr: "0.0.0.0:0", AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if info := b.Info(); info.Auth != "anonymous" || !info.AnonymousAllowed {
		t.Fatalf("allow_anonymous beyond loopback: info %+v", info)
	}
	mqtttest.DialRaw(t, loopbackAddr(t, b), mqtttest.RawOptions{ClientID: "anyone"})
	lb, err := mqtt.ServeLocal(mqtt.LocalOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	if info := lb.Info(); info.Auth != "loopback" || lb.URL() != "tcp://"+lb.Addr() {
		t.Fatalf("loopback broker: info %+v url %s", info, lb.URL())
	}
}

// On a broker beyond loopback with a users file: anonymous clients and
// wrong passwords are refused; a read-only user subscribes to telemetry
// but its command (and a forged status) never reaches the agent; a
// command user's does.
func TestLocalBrokerRoles(t *testing.T) {
	users := writeUsers(t, "sha512-pbkdf2", map[string]string{"ha": "ha-pw", "grafana": "gr-pw"})
	b, err := mqtt.ServeLocal(mqtt.LocalOptions{Addr: "0.0.0.0:0", UsersFile: users, Device: "dev",
		Roles: map[string]mqtt.Role{"ha": mqtt.RoleCommand, "grafana": mqtt.RoleRead}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if info := b.Info(); info.Auth != "password" || info.AnonymousAllowed {
		t.Fatalf("info %+v", info)
	}
	addr := loopbackAddr(t, b)
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			for name, o := range map[string]mqtttest.RawOptions{
				"anonymous":      {Version: v, ClientID: "anon"},
				"wrong password": {Version: v, ClientID: "ha", Username: "ha", Password: "gr-pw"},
				"unknown user":   {Version: v, ClientID: "x", Username: "mallory", Password: "ha-pw"},
				"agent's name":   {Version: v, ClientID: "y", Username: "edge-agent:self", Password: ""},
				"reader's will commands": {Version: v, ClientID: "w1", Username: "grafana", Password: "gr-pw",
					WillTopic: "edge/dev/cmd/evict/w", WillPayload: []byte(`{"model":"m"}`)},
				"commander's will forges status": {Version: v, ClientID: "w2", Username: "ha", Password: "ha-pw",
					WillTopic: "edge/dev/status", WillPayload: []byte("forged"), WillRetain: true},
			} {
				if _, ack, err := mqtttest.TryRaw(t, addr, o); !errors.Is(err, mqtttest.ErrRefused) {
					t.Errorf("%s: connected (%+v, %v)", name, ack, err)
				}
			}
			// A will outside the agent's topics is fine (Home Assistant's own
			// availability, say).
			mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "w3", Username: "grafana", Password: "gr-pw",
				WillTopic: "grafana/status", WillPayload: []byte("offline")})
			user, pw := b.Login()
			agentURL := strings.TrimPrefix(b.URL(), "tcp://")
			agent, _ := mqtttest.DialRaw(t, agentURL, mqtttest.RawOptions{Version: v, ClientID: "agent", Username: user, Password: pw})
			subscribe(t, agent, 1, "edge/dev/cmd/#")
			publish(t, agent, 2, "edge/dev/status", true, "online")

			reader, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "grafana", Username: "grafana", Password: "gr-pw"})
			subscribe(t, reader, 1, "edge/dev/#")
			st := next(t, reader, mqtttest.TypePublish)
			if st.Topic != "edge/dev/status" {
				t.Fatalf("reader got %+v", st)
			}
			if err := reader.Puback(st.ID); err != nil {
				t.Fatal(err)
			}
			_ = reader.Publish(0, "edge/dev/cmd/evict/r1", 0, false, []byte(`{"model":"m"}`))
			_ = reader.Publish(7, "edge/dev/status", 1, true, []byte("forged"))
			// 3.1.1 has no refusal code for a PUBLISH: the broker drops the
			// connection (mochi says DISCONNECT first); 5.0 answers PUBACK
			// 0x87 (not authorized).
			p, err := reader.Next(5 * time.Second)
			for err == nil && p.Type == mqtttest.TypePublish { // a live copy of the status
				_ = reader.Puback(p.ID)
				p, err = reader.Next(5 * time.Second)
			}
			switch {
			case v == 4 && err == nil && p.Type != mqtttest.TypeDisconnect:
				t.Fatalf("3.1.1 reader's forged status answered %+v", p)
			case v == 5 && (err != nil || p.Type != mqtttest.TypePuback || len(p.Codes) != 1 || p.Codes[0] != 0x87):
				t.Fatalf("5.0 reader's forged status: %+v %v, want PUBACK 0x87", p, err)
			}

			cmd, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "ha", Username: "ha", Password: "ha-pw"})
			publish(t, cmd, 1, "edge/dev/cmd/evict/r2", false, `{"model":"m"}`)
			if got := next(t, agent, mqtttest.TypePublish); got.Topic != "edge/dev/cmd/evict/r2" {
				t.Fatalf("the agent's first command is %s %q, want the command user's", got.Topic, got.Payload)
			}
			// Nor may a command user forge the agent's status.
			_ = cmd.Publish(2, "edge/dev/status", 1, true, []byte("forged"))
			late, _ := mqtttest.DialRaw(t, addr, mqtttest.RawOptions{Version: v, ClientID: "late", Username: "grafana", Password: "gr-pw"})
			subscribe(t, late, 1, "edge/dev/status")
			if p := next(t, late, mqtttest.TypePublish); string(p.Payload) != "online" {
				t.Fatalf("status after forgeries: %q", p.Payload)
			}
		})
	}
}

// With a certificate the broker speaks TLS (a client verifying it with
// the CA gets in; plain MQTT does not), and the agent's own listener
// stays plain on loopback.
func TestLocalBrokerTLS(t *testing.T) {
	ca, cert, key := mqtttest.WriteCerts(t, t.TempDir())
	users := writeUsers(t, "sha512-pbkdf2", map[string]string{"ha": "ha-pw"})
	b, err := mqtt.ServeLocal(mqtt.LocalOptions{Addr: "0.0.0.0:0", UsersFile: users, CertFile: cert, KeyFile: key, Device: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.Info().TLS {
		t.Fatalf("info %+v", b.Info())
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	addr := loopbackAddr(t, b)
	mqtttest.DialRaw(t, addr, mqtttest.RawOptions{ClientID: "ha", Username: "ha", Password: "ha-pw",
		TLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}})
	if _, _, err := mqtttest.TryRaw(t, addr, mqtttest.RawOptions{ClientID: "plain", Username: "ha", Password: "ha-pw"}); err == nil {
		t.Fatal("plain MQTT accepted on the TLS listener")
	}
	user, pw := b.Login()
	if !mqtt.IsLoopback(strings.TrimPrefix(b.URL(), "tcp://")) {
		t.Fatalf("agent's URL %s", b.URL())
	}
	mqtttest.DialRaw(t, strings.TrimPrefix(b.URL(), "tcp://"), mqtttest.RawOptions{ClientID: "agent", Username: user, Password: pw})
}
