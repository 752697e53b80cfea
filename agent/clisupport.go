package agent

import "github.com/edge-agent/edge-agent/mqtt"

// What the command line (agent/cli) needs of a Config beyond its fields.

// MQTTOptions are the MQTT client options the configuration describes.
func (c Config) MQTTOptions() mqtt.Options { return c.mqttOptions() }

// DeviceID is the device id in topics: [mqtt] device, or this machine's.
func (c Config) DeviceID() string { return c.device() }

// InvalidConfig is an ErrConfig error for a configuration from source
// (a file, or "(flags)") that err says is invalid.
func InvalidConfig(source string, err error) error {
	return &configError{path: source, msg: err.Error()}
}
