package agent_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-agent/edge-agent/agent"
)

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		name, toml string
		wantErr    []string // substrings; none means valid
	}{
		{"defaults", "", nil},
		{"full", `
state_dir = "/var/lib/edge-agent"
log_level = "debug"
models_dir = "/opt/models"
[pool]
budget = "512MiB"
interpreters_per_model = 2
threads = 4
page_in = false
[[models]]
id = "mobilenet_v2"
path = "/opt/models/v2.tflite"
pinned = true
`, nil},
		{"unknown field", "budgett = 3\n", []string{"unknown field", "budgett"}},
		{"local broker with logins", "[mqtt]\nlocal_listen = \"0.0.0.0:1883\"\nlocal_users_file = \"/etc/edge-agent/mqtt-users\"\nlocal_acl = { ha = \"command\", grafana = \"read\" }\n", nil},
		{"bad local broker keys", "[mqtt]\nlocal_acl = { ha = \"admin\" }\nlocal_cert_file = \"/c.pem\"\n", []string{"mqtt.local_acl.ha", "local_acl needs mqtt.local_users_file", "local_cert_file and mqtt.local_key_file"}},
		{"bad values", `
log_level = "loud"
[pool]
budget = "12 parsecs"
`, []string{"parsecs"}},
		{"bad pool", `
[pool]
interpreters_per_model = 0
threads = -1
`, []string{"pool.interpreters_per_model", "pool.threads"}},
		{"bad models", `
[[models]]
id = "../etc/passwd"
path = "x"
[[models]]
id = "a"
[[models]]
id = "a"
path = "y"
`, []string{"models[0].id", "models[1].path", "models[2].id", "used twice"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.toml")
			if err := os.WriteFile(p, []byte(c.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := agent.LoadConfig(p)
			if len(c.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, agent.ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// A local broker beyond loopback needs logins, or anonymous access asked
// for by name.
func TestOpenLocalBrokerBeyondLoopbackRefused(t *testing.T) {
	cfg := agent.DefaultConfig()
	cfg.MQTT.LocalListen = "0.0.0.0:1883"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "local_users_file") || !strings.Contains(err.Error(), "local_allow_anonymous") {
		t.Fatalf("open broker on 0.0.0.0: %v", err)
	}
	cfg.MQTT.LocalAllowAnonymous = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.MQTT.LocalAllowAnonymous, cfg.MQTT.LocalUsersFile = false, "/etc/edge-agent/mqtt-users"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.MQTT.LocalUsersFile, cfg.MQTT.LocalListen = "", "127.0.0.1:1883"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "4MiB": 4 << 20, "1.5GiB": 3 << 29, "100MB": 1e8, "512k": 512 << 10} {
		got, err := agent.ParseByteSize(in)
		if err != nil || int64(got) != want {
			t.Errorf("%q = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "3 parsecs", "1e400"} {
		if _, err := agent.ParseByteSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDefaultConfigUsesSystemdStateDirectory(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/edge-agent:/var/lib/other")
	if got := agent.DefaultConfig().StateDir; got != "/var/lib/edge-agent" {
		t.Fatalf("state dir %q", got)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	if _, err := agent.LoadConfig("../edge-agent.example.toml"); err != nil {
		t.Fatal(err)
	}
}

// Listen addresses and the discovery prefix are checked at load.
func TestEcosystemConfigChecked(t *testing.T) {
	t.Setenv("EDGE_AGENT_MQTT_LOCAL_LISTEN", "") // not the test-wide "off"
	for _, c := range []struct{ toml, want string }{
		{"[mqtt]\nlocal_listen = \"1883\"\n", "mqtt.local_listen"},
		{"[metrics]\nlisten = \"localhost\"\n", "metrics.listen"},
		{"[homeassistant]\nenabled = true\ndiscovery_prefix = \"ha/#\"\n", "homeassistant.discovery_prefix"},
		{"[fleet]\ntolerance = 0.0\n", "fleet:"},
		{"[fleet]\nlookup_wait = \"5m\"\n", "fleet:"},
		{"[mqtt]\nbrokers = [\"tcp://127.0.0.1:1\"]\nreconnect_min = \"10s\"\nreconnect_max = \"1s\"\n", "reconnect_max"},
	} {
		p := filepath.Join(t.TempDir(), "c.toml")
		if err := os.WriteFile(p, []byte(c.toml), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := agent.LoadConfig(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error naming %s", c.toml, err, c.want)
		}
	}
}
