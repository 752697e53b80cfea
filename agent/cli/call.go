package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
)

// call is `edge-agent call VERB [flags]`: one command to a running agent
// over its MQTT command topics, its reply printed.
func (c cli) call(ctx context.Context, args []string) (bool, error) {
	fs := c.newFlags("call")
	config := fs.String("config", "", "take broker, device and credentials from this configuration file")
	broker := fs.String("broker", "", "broker URL (default: the configuration's first broker, else the local broker on [mqtt] local_listen)")
	device := fs.String("device", "", "the agent's device id (default: the configuration's, or this machine's)")
	model := fs.String("model", "", "model or family id (prewarm, evict, pin, unpin, rollback, infer)")
	image := fs.String("image", "", "infer: a BMP, PNG or JPEG file, sent as it is")
	input := fs.String("input", "", "infer: a raw input tensor file")
	top := fs.Int("top", 5, "infer: how many classes")
	budget := fs.String("budget", "", `set-budget: bytes or a size like "256MiB"`)
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the reply")
	asJSON := fs.Bool("json", false, "print the reply as JSON")
	if err := parse(fs, args); err != nil {
		return *asJSON, err
	}
	pos := fs.Args()
	if len(pos) == 0 {
		return *asJSON, usageErr("call: want a verb (%v)", agent.Verbs)
	}
	verb := pos[0]
	if verb == "set-budget" && len(pos) == 2 && *budget == "" {
		*budget = pos[1] // `call set-budget 256MiB`
		pos = pos[:1]
	}
	if len(pos) > 1 {
		return *asJSON, usageErr("call %s: unexpected argument %q", verb, pos[1])
	}
	_, o, err := clientOptions("call", *config, *broker, *device)
	if err != nil {
		return *asJSON, err
	}
	payload, binary, err := callPayload(verb, *model, *image, *input, *budget, *top)
	if err != nil {
		return *asJSON, err
	}
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, err := mqtt.Call(cctx, o, verb, *model, payload, binary)
	if err != nil {
		return *asJSON, err
	}
	if *asJSON {
		if err := c.printJSON(r); err != nil {
			return true, err
		}
	} else if r.OK {
		var v any
		if err := json.Unmarshal(r.Result, &v); err == nil {
			b, _ := json.MarshalIndent(v, "", "  ")
			fmt.Fprintf(c.stdout, "%s\n", b)
		}
	}
	if !r.OK && r.Error != nil {
		// The agent's code, so the exit status is the CLI table's.
		return *asJSON, knownKind(r.Error.Code, r.Error.Message)
	}
	return *asJSON, nil
}

// callPayload builds the command's payload: JSON, or for infer the file's
// bytes as a binary payload (no base64).
func callPayload(verb, model, image, input, budget string, top int) ([]byte, bool, error) {
	need := func(flag, v string) error {
		if v == "" {
			return usageErr("call %s: --%s is required", verb, flag)
		}
		return nil
	}
	switch verb {
	case "prewarm", "evict", "pin", "unpin", "rollback":
		if err := need("model", model); err != nil {
			return nil, false, err
		}
		b, err := json.Marshal(map[string]any{"model": model})
		return b, false, err
	case "set-budget":
		if err := need("budget", budget); err != nil {
			return nil, false, err
		}
		b, err := json.Marshal(map[string]any{"budget": budget})
		return b, false, err
	case "infer":
		if err := need("model", model); err != nil {
			return nil, false, err
		}
		if (image == "") == (input == "") {
			return nil, false, usageErr("call infer: give exactly one of --image and --input")
		}
		path := image + input
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, false, fmt.Errorf("call infer: %w", err)
		}
		if top != 5 {
			// The binary form has no room for options: send JSON instead.
			field := "input"
			if image != "" {
				field = "image"
			}
			j, err := json.Marshal(map[string]any{"model": model, field: b, "top": top})
			return j, false, err
		}
		return b, true, nil
	case "status", "rescan", "reload", "wake":
		return []byte("{}"), false, nil
	}
	return nil, false, usageErr("call: unknown verb %q (known: %v)", verb, agent.Verbs)
}

// clientOptions are the MQTT options of a command-line client: the
// configuration file's (or the defaults) with the environment's overrides, --broker and --device over them,
// and with no broker at all the local one on [mqtt] local_listen.
func clientOptions(cmd, config, broker, device string) (agent.Config, mqtt.Options, error) {
	// Without a file, the defaults and the environment, as `run` takes
	// them: EDGE_AGENT_MQTT_LOCAL_LISTEN moves both ends.
	cfg, err := agent.LoadConfig(config)
	if err != nil {
		return cfg, mqtt.Options{}, err
	}
	o := cfg.MQTTOptions()
	if broker != "" {
		o.Brokers = []string{broker}
	}
	if device != "" {
		o.Device, cfg.MQTT.Device = device, device
	}
	if len(o.Brokers) == 0 && cfg.MQTT.LocalListen != "" {
		o.Brokers = []string{"tcp://" + cfg.MQTT.LocalListen} // the agent's own broker, or whoever serves there
	}
	if len(o.Brokers) == 0 {
		return cfg, o, usageErr("%s: no broker (--broker URL, or --config with [mqtt] brokers or local_listen)", cmd)
	}
	return cfg, o, nil
}

// homeassistant is `edge-agent homeassistant remove`: clear the device's
// discovery configs, so Home Assistant forgets it (uninstall.sh --purge).
func (c cli) homeassistant(ctx context.Context, args []string) error {
	fs := c.newFlags("homeassistant remove")
	config := fs.String("config", "", "take broker, device, prefixes and credentials from this configuration file")
	broker := fs.String("broker", "", "broker URL (default: the configuration's, else the local broker)")
	device := fs.String("device", "", "the agent's device id (default: the configuration's, or this machine's)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to try")
	ifEnabled := fs.Bool("if-enabled", false, "do nothing unless the configuration enables [homeassistant] (uninstall.sh)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) != "remove" {
		return usageErr("homeassistant: want remove (flags before or after it)")
	}
	cfg, o, err := clientOptions("homeassistant remove", *config, *broker, *device)
	if *ifEnabled && (err != nil || !cfg.HomeAssistant.Enabled) {
		return nil
	}
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := agent.RemoveHomeAssistant(cctx, cfg, o); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "Home Assistant discovery removed for device %s\n", cfg.DeviceID())
	return nil
}
