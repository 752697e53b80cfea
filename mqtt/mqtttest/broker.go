// Package mqtttest runs a real mosquitto broker for tests, on a free
// loopback port, so a test can kill it (SIGKILL) and start it again on the
// same port. Optional TLS with a CA the test generates, and password auth.
package mqtttest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options shape the broker.
type Options struct {
	// TLS serves MQTT over TLS with a CA and server certificate made for
	// the test (Broker.CAFile).
	TLS bool
	// Users, when set, turns off anonymous access: user → password.
	Users map[string]string
	// Extra is appended to mosquitto.conf (a bridge, an ACL file).
	Extra string
}

// Broker is a running (or stopped) mosquitto.
type Broker struct {
	t    testing.TB
	exe  string
	dir  string
	conf string
	port int
	tls  bool

	// CAFile is the CA that signed the server certificate (TLS only).
	CAFile string

	// mu guards cmd and log.
	mu  sync.Mutex
	cmd *exec.Cmd
	log *os.File
}

// Start runs mosquitto on a free loopback port; it is stopped when the test
// ends. Without mosquitto installed the test fails: `make test` installs it.
func Start(t testing.TB, o Options) *Broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Fatalf("mosquitto not installed (make test installs it): %v", err)
	}
	b := &Broker{t: t, exe: bin, dir: t.TempDir(), port: freePort(t), tls: o.TLS}
	var conf strings.Builder
	fmt.Fprintf(&conf, "listener %d 127.0.0.1\n", b.port)
	// Without it mosquitto's small writes wait on Nagle + delayed ACK: every
	// command round trip gains ~40 ms. Recommended for production brokers too.
	fmt.Fprintf(&conf, "set_tcp_nodelay true\n")
	fmt.Fprintf(&conf, "persistence false\nmax_queued_messages 100000\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n")
	if os.Geteuid() == 0 {
		// Started as root, mosquitto switches to its own user, which cannot
		// read the test's private temp dir.
		fmt.Fprintf(&conf, "user root\n")
	}
	if o.TLS {
		ca, cert, key := writeCerts(t, b.dir)
		b.CAFile = ca
		fmt.Fprintf(&conf, "cafile %s\ncertfile %s\nkeyfile %s\n", ca, cert, key)
	}
	if len(o.Users) > 0 {
		pw := filepath.Join(b.dir, "passwd")
		if err := os.WriteFile(pw, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for u, p := range o.Users {
			if out, err := exec.Command(passwdTool(bin), "-b", pw, u, p).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_passwd: %v %s", err, out)
			}
		}
		fmt.Fprintf(&conf, "allow_anonymous false\npassword_file %s\n", pw)
	} else {
		fmt.Fprintf(&conf, "allow_anonymous true\n")
	}
	conf.WriteString(o.Extra)
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	if err := os.WriteFile(b.conf, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Restart()
	t.Cleanup(b.Stop)
	return b
}

func passwdTool(mosquitto string) string {
	if p, err := exec.LookPath("mosquitto_passwd"); err == nil {
		return p
	}
	return filepath.Join(filepath.Dir(mosquitto), "..", "bin", "mosquitto_passwd")
}

// URL is the broker's address for the client, e.g. tcp://127.0.0.1:1883.
func (b *Broker) URL() string {
	scheme := "tcp"
	if b.tls {
		scheme = "ssl"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, b.port)
}

// Restart starts the broker (again) on the same port and waits until it
// accepts connections.
func (b *Broker) Restart() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		b.t.Fatal("mqtttest: broker already running")
	}
	logf, err := os.OpenFile(filepath.Join(b.dir, "mosquitto.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	cmd := exec.Command(b.exe, "-c", b.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.cmd, b.log = cmd, logf
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", b.port), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto did not listen on %d: %v\n%s", b.port, err, b.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill stops the broker with SIGKILL: no will cleanup, no goodbye.
func (b *Broker) Kill() { b.signal(syscall.SIGKILL) }

// Stop stops the broker with SIGTERM; safe to call when stopped.
func (b *Broker) Stop() { b.signal(syscall.SIGTERM) }

// stopWait is how long a SIGTERM gets before SIGKILL: a mosquitto was
// once seen asleep with SIGTERM blocked, and the test hung in Stop for 23
// minutes.
const stopWait = 5 * time.Second

func (b *Broker) signal(sig syscall.Signal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(sig)
	exited := make(chan struct{})
	go func() {
		_ = b.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(stopWait):
		b.t.Logf("mqtttest: mosquitto ignored %v for %v; killing it", sig, stopWait)
		_ = b.cmd.Process.Kill()
		<-exited
	}
	b.log.Close()
	b.cmd, b.log = nil, nil
}

// Log returns what the broker printed.
func (b *Broker) Log() string {
	data, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
	return string(data)
}

// LogLines counts lines of the broker log containing s.
func (b *Broker) LogLines(s string) int {
	f, err := os.Open(filepath.Join(b.dir, "mosquitto.log"))
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// FreeAddr is a loopback host:port nothing listens on now (a local
// broker's or a metrics endpoint's address in tests).
func FreeAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// writeCerts makes a CA and a server certificate for 127.0.0.1/localhost.
func writeCerts(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge-agent test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server-key.pem", "EC PRIVATE KEY", keyDER)
}

// WriteCerts makes a CA and a server certificate for 127.0.0.1/localhost
// in dir: the CA's file, the server's certificate and key (PEM).
func WriteCerts(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	return writeCerts(t, dir)
}
