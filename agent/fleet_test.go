package agent_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/fleet"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// fleetConfig is a fleet member on broker: fleet on, its own device id.
func fleetConfig(t *testing.T, broker, device string, models ...agent.ModelConfig) agent.Config {
	cfg := mqttConfig(t, broker, models...)
	cfg.MQTT.Device = device
	cfg.Fleet.Enabled = true
	return cfg
}

var subscriberN atomic.Int64

// fleetRecords reads the retained fleet records on b, by key.
func fleetRecords(t *testing.T, b *mqtttest.Broker) map[storage.Validity]fleet.Record {
	t.Helper()
	sub := b.Subscribe(t, fmt.Sprintf("fleet-reader-%d", subscriberN.Add(1)), "edge/fleet/#")
	out := map[storage.Validity]fleet.Record{}
	for {
		select {
		case m := <-sub.Chan():
			if len(m.Payload) == 0 {
				continue
			}
			r, err := fleet.Decode(m.Payload)
			if err != nil {
				t.Fatalf("record on %s: %v", m.Topic, err)
			}
			out[r.Validity] = r
		case <-time.After(300 * time.Millisecond): // retained ones come at once
			return out
		}
	}
}

// waitRecord waits until the record for key k is from device ("": from
// any device).
func waitRecord(t *testing.T, b *mqtttest.Broker, k storage.Validity, device string) fleet.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, ok := fleetRecords(t, b)[k]
		if ok && (device == "" || r.Device == device) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("record for %.12s: from %q (%v), want %q", k.Model, r.Device, ok, device)
		}
	}
}

// calKey is the validity key of a model's calibration in rep.
func calKey(t *testing.T, rep agent.StartupReport, id string) storage.Validity {
	t.Helper()
	m := byID(t, rep, id)
	if m.Calibrated == nil {
		t.Fatalf("%s not calibrated: %+v", id, m.Calibration)
	}
	return m.Calibrated.Validity
}

func statusOf(t *testing.T, a *agent.Agent, id string) agent.ModelReport {
	t.Helper()
	return byID(t, a.Report(), id)
}

// TestFleetRecordsAreCheckedBeforeUse: a record is used only for exactly
// its key, only when possible here, and a local measurement that
// contradicts it replaces it whatever its sample count.
func TestFleetRecordsAreCheckedBeforeUse(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	v1 := agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")}
	lstm := agent.ModelConfig{ID: "lstm", Path: tflitetest.Path(t, "keras_lstm_mnist_ptq.tflite")}
	run := func(device string, o agent.Options, models ...agent.ModelConfig) agent.StartupReport {
		t.Helper()
		a := start(t, fleetConfig(t, b.URL(), device, models...), o)
		defer a.Close()
		return a.Report()
	}
	status := func(rep agent.StartupReport, id string) storage.Lookup { return byID(t, rep, id).Calibration }

	// The records are awaited while their device runs: one stopped right
	// after calibrating offers them again on its next start instead.
	fa := start(t, fleetConfig(t, b.URL(), "first", v1, lstm), agent.Options{})
	first := fa.Report()
	for _, id := range []string{"v1", "lstm"} {
		if s := status(first, id); s.Status != storage.New {
			t.Fatalf("first device, %s: %+v, want new (measured here)", id, s)
		}
	}
	v1key := calKey(t, first, "v1")
	published := waitRecord(t, b, v1key, "first")
	waitRecord(t, b, calKey(t, first, "lstm"), "first")
	fa.Close()
	if published.Samples != 3 || published.Validity.Hardware != first.Fingerprint || published.Validity.Runtime != first.Runtime {
		t.Fatalf("published record: %+v", published)
	}

	// Another board, another runtime, another model file under the same id:
	// the records are not theirs.
	for name, o := range map[string]agent.Options{
		"other hardware": {HardwareRoot: filepath.Join("testdata", "hw", "rpi4")},
		"other runtime":  {RuntimeVersion: "2.99.0"},
	} {
		if s := status(run("twin-"+strings.ReplaceAll(name, " ", "-"), o, v1), "v1"); s.Status == storage.Fleet {
			t.Errorf("%s used the record: %+v", name, s)
		}
	}
	other := run("other-model", agent.Options{}, agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "xor_model.tflite")})
	if s := status(other, "v1"); s.Status != storage.New {
		t.Errorf("another file under the same id: %+v, want new", s)
	}

	// A twin uses the record at once, and says so in its status.
	ta := start(t, fleetConfig(t, b.URL(), "twin", v1, lstm), agent.Options{})
	twin, ready := ta.Report(), ta.Status().Readiness
	ta.Close()
	for _, id := range []string{"v1", "lstm"} {
		// A busy machine (the rest of the test suite) leaves the check for
		// the next start; a quiet one verifies.
		if s := status(twin, id); s.Status != storage.Fleet || (s.Reason != "from first, verified here" && s.Reason != "from first, not verified yet: cores busy") {
			t.Fatalf("twin, %s: %+v, want fleet from first, verified (or not yet: cores busy)", id, s)
		}
		if r := ready[id]; r.Calibration != "fleet" {
			t.Fatalf("twin, %s: status calibration %q, want fleet", id, r.Calibration)
		}
	}

	pub := b.Subscribe(t, "fleet-writer", "edge/unused")
	topic := fleet.Topic("edge", published.Validity)
	forge := func(device string, samples int, change func(*fleet.Record)) {
		r := published
		r.Device, r.Samples, r.At = device, samples, time.Now()
		r.Facts.Tried = nil
		change(&r)
		p, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		pub.PublishRetained(t, topic, p)
	}

	// Impossible values: rejected, measured here, and this device's
	// record replaces the impossible one whatever its sample count.
	forge("impossible", 1000, func(r *fleet.Record) { r.Facts.Threads = 64 })
	ca := start(t, fleetConfig(t, b.URL(), "checker", v1), agent.Options{})
	if s := status(ca.Report(), "v1"); s.Status != storage.New {
		t.Fatalf("a record with 64 threads: %+v, want rejected (new)", s)
	}
	waitRecord(t, b, v1key, "checker")
	ca.Close()

	// Plausible but wrong (the heap 8× too large), with fewer samples than
	// a local calibration: used at once, disagrees on verification, is
	// measured here and replaced.
	wrongHeap := func(r *fleet.Record) { r.Facts.HeapBytes = 8*r.Facts.HeapBytes + 1<<20 }
	forge("liar", 1, wrongHeap)
	da := start(t, fleetConfig(t, b.URL(), "doubter", v1), agent.Options{})
	if s := status(da.Report(), "v1"); s.Status != storage.New || !strings.Contains(s.Reason, "disagreed") {
		t.Fatalf("a disagreeing record with 1 sample: %+v, want measured here after disagreeing", s)
	}
	if r := waitRecord(t, b, v1key, "doubter"); r.Samples != 3 {
		t.Fatalf("republished with %d samples", r.Samples)
	}
	da.Close()

	// A sample count no calibration reaches is impossible: refused,
	// measured here, and this device's record replaces it.
	forge("many", 100, wrongHeap)
	d2 := start(t, fleetConfig(t, b.URL(), "doubter2", v1), agent.Options{})
	if s := status(d2.Report(), "v1"); s.Status != storage.New {
		t.Fatalf("a record with 100 samples: %+v, want refused (new)", s)
	}
	waitRecord(t, b, v1key, "doubter2")
	d2.Close()

	// The most samples a record may have, plausible but wrong: used at
	// once, disagrees on verification, is measured here and published over
	// whatever its sample count, so one wrong record cannot hold its key.
	forge("most", fleet.MaxSamples, wrongHeap)
	d3 := start(t, fleetConfig(t, b.URL(), "doubter3", v1), agent.Options{})
	defer d3.Close()
	rep := d3.Report()
	if s := status(rep, "v1"); s.Status != storage.New || !strings.Contains(s.Reason, "disagreed") {
		t.Fatalf("a disagreeing record with %d samples: %+v, want measured here after disagreeing", fleet.MaxSamples, s)
	}
	if r := waitRecord(t, b, v1key, "doubter3"); r.Samples != 3 {
		t.Fatalf("published over with %d samples", r.Samples)
	}
	raw, _ := json.Marshal(byID(t, rep, "v1").Calibrated)
	t.Logf("kept locally: %s", raw)
}

// fleetMember writes the configuration of one device of a fleet on broker
// (fleet sharing on or off), with the calibration's defaults.
func fleetMember(t *testing.T, dir, broker, device string, share bool, models ...agent.ModelConfig) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = %q\n", filepath.Join(dir, "state"))
	fmt.Fprintf(&b, "[power]\nsysfs_root = %q\nbusy_load_per_core = 1000.0\n", fixture("rpi"))
	fmt.Fprintf(&b, "[mqtt]\nbrokers = [%q]\ndevice = %q\n", broker, device)
	// Generous waits: this machine runs other test packages meanwhile,
	// and what is tested here is sharing. A late retained record or a
	// load slowed by them is TestFleetRecordsAreCheckedBeforeUse's
	// subject, not this one's (CI once had a twin measure for itself).
	fmt.Fprintf(&b, "[fleet]\nenabled = %v\nlookup_wait = \"10s\"\ntolerance = 4.0\n", share)
	for _, m := range models {
		fmt.Fprintf(&b, "[[models]]\nid = %q\npath = %q\nlabels = %q\n", m.ID, m.Path, m.Labels)
	}
	return writeFile(t, filepath.Join(dir, "edge-agent.toml"), []byte(b.String()), 0o644)
}

// finalReport is a device's final startup report, and its payload.
type finalReport struct {
	agent.StartupReport
	raw []byte
}

// finalReports waits for the final startup report of every device.
func finalReports(t *testing.T, sub *mqtttest.Subscriber, devices []string) map[string]finalReport {
	t.Helper()
	out := map[string]finalReport{}
	deadline := time.After(3 * time.Minute)
	for len(out) < len(devices) {
		select {
		case m := <-sub.Chan():
			var rep agent.StartupReport
			if err := json.Unmarshal(m.Payload, &rep); err != nil {
				t.Fatalf("startup report on %s: %v", m.Topic, err)
			}
			dev := strings.Split(m.Topic, "/")[1]
			if rep.Final && slices.Contains(devices, dev) {
				out[dev] = finalReport{rep, m.Payload}
			}
		case <-deadline:
			t.Fatalf("final startup reports: %d of %d", len(out), len(devices))
		}
	}
	return out
}

// calibrationCPU sums what calibrating took the devices, in CPU ms.
func calibrationCPU(t *testing.T, reps map[string]finalReport) float64 {
	t.Helper()
	var sum float64
	for _, rep := range reps {
		var v struct {
			Models []struct {
				CalibrationCPUMs float64 `json:"calibration_cpu_ms"`
			} `json:"models"`
		}
		if err := json.Unmarshal(rep.raw, &v); err != nil {
			t.Fatal(err)
		}
		for _, m := range v.Models {
			sum += m.CalibrationCPUMs
		}
	}
	return sum
}

// TestFleetTwinsStartWarm: five devices with fresh state, the same models
// and broker. The first measures and publishes; the other four serve with
// its records at once (calibration "fleet"), verify them with one load,
// and answer correctly. The calibration CPU of the five is compared with
// five independent first starts (logged; the test asserts the statuses).
func TestFleetTwinsStartWarm(t *testing.T) {
	tflitetest.Long(t)
	b := mqtttest.Start(t, mqtttest.Options{})
	labels := tflitetest.Path(t, "imagenet_labels.txt")
	models := []agent.ModelConfig{
		{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"), Labels: labels},
		{ID: "v2", Path: tflitetest.Path(t, "mobilenet_v2_1.0_224_quant.tflite"), Labels: labels},
		{ID: "lstm", Path: tflitetest.Path(t, "keras_lstm_mnist_ptq.tflite")},
	}
	sub := b.Subscribe(t, "reports", "edge/+/telemetry/startup")
	fleetOf := func(prefix string, n int, share bool) map[string]finalReport {
		t.Helper()
		devices := make([]string, n)
		type running struct {
			stop func()
			conf string
		}
		procs := make([]running, n)
		for i := range devices {
			devices[i] = fmt.Sprintf("%s%d", prefix, i)
		}
		// One after another: five boards, each with its cores to itself,
		// not five processes contending for this machine's two.
		reps := map[string]finalReport{}
		for i, dev := range devices {
			dir := t.TempDir()
			conf := fleetMember(t, dir, b.URL(), dev, share, models...)
			cmd, logs, done := startRun(t, dir, "--config", conf)
			procs[i] = running{stop: func() {
				stopRun(t, cmd, logs, done)
				if os.Getenv("EDGE_AGENT_TEST_LOG") != "" {
					t.Logf("%s:\n%s", dev, logs)
				}
			}, conf: conf}
			reps[dev] = finalReports(t, sub, []string{dev})[dev]
		}
		for i, dev := range devices {
			// Every device answers correctly with what it runs on.
			r := cli(t, "call", "infer", "--model", "v2", "--image", tflitetest.Path(t, "cat.bmp"), "--top", "1", "--device", dev, "--config", procs[i].conf)
			var rep agent.InferReply
			if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil || len(rep.Top) != 1 || rep.Top[0].Index != 286 {
				t.Fatalf("%s: infer cat.bmp: exit %d %v\n%s%s", dev, r.code, err, r.stdout, r.stderr)
			}
			// What a sharing device measured is on the broker before it
			// stops (one stopped earlier offers it on its next start).
			// Whose record it is, the caller checks.
			for _, m := range reps[dev].Models {
				if share && m.Calibration.Status == storage.New && m.Calibrated != nil {
					waitRecord(t, b, m.Calibrated.Validity, "")
				}
			}
			procs[i].stop()
		}
		return reps
	}

	first := fleetOf("first", 1, true)
	for _, m := range first["first0"].Models {
		if m.Calibration.Status != storage.New || m.Calibrated == nil {
			t.Fatalf("first device, %s: %+v, want new (measured)", m.ID, m.Calibration)
		}
		waitRecord(t, b, m.Calibrated.Validity, "first0") // and still published
	}
	twins := fleetOf("twin", 4, true)
	for dev, rep := range twins {
		for _, m := range rep.Models {
			if m.Calibration.Status != storage.Fleet || !strings.Contains(m.Calibration.Reason, "first0") {
				t.Errorf("%s, %s: calibration %+v, want fleet (from first0)", dev, m.ID, m.Calibration)
			}
		}
	}
	independent := fleetOf("alone", 5, false)
	shared, alone := calibrationCPU(t, first)+calibrationCPU(t, twins), calibrationCPU(t, independent)
	t.Logf("calibration CPU of 5 first starts: %.0f ms sharing (first %.0f ms, 4 twins %.0f ms) against %.0f ms independent: %.2f×",
		shared, calibrationCPU(t, first), calibrationCPU(t, twins), alone, shared/alone)
}

// TestFleetRecordCrossesABridge: two mosquittos bridged for edge/#; a
// record published on one is used by a twin on the other.
func TestFleetRecordCrossesABridge(t *testing.T) {
	a := mqtttest.Start(t, mqtttest.Options{})
	bridge := fmt.Sprintf("connection to-a\naddress %s\ntopic edge/# both 1\ncleansession true\n", strings.TrimPrefix(a.URL(), "tcp://"))
	b := mqtttest.Start(t, mqtttest.Options{Extra: bridge})
	v1 := agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")}

	first := start(t, fleetConfig(t, a.URL(), "site-a", v1), agent.Options{})
	key := calKey(t, first.Report(), "v1")
	waitRecord(t, a, key, "site-a")
	waitRecord(t, b, key, "site-a") // retained on the far side too
	first.Close()

	twin := start(t, fleetConfig(t, b.URL(), "site-b", v1), agent.Options{})
	defer twin.Close()
	if s := statusOf(t, twin, "v1").Calibration; s.Status != storage.Fleet || !strings.Contains(s.Reason, "site-a") {
		t.Fatalf("twin across the bridge: %+v, want fleet from site-a", s)
	}
}

// TestFleetACL: under the README's mosquitto ACL a device publishes its
// fleet record and its own telemetry, and what it writes into another
// device's topics never arrives.
func TestFleetACL(t *testing.T) {
	dir := t.TempDir()
	acl := writeFile(t, filepath.Join(dir, "acl"), []byte(`pattern readwrite edge/%u/#
pattern readwrite edge/fleet/#
pattern readwrite homeassistant/+/edge_agent_%u/#
pattern read homeassistant/status

user operator
topic readwrite edge/#
topic read homeassistant/#
`), 0o644)
	b := mqtttest.Start(t, mqtttest.Options{Users: map[string]string{"dev1": "pw1", "operator": "op"}, Extra: "acl_file " + acl + "\n"})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", b.Log())
		}
	})
	ops := b.Subscribe(t, "ops", "edge/#", "operator", "op")

	cfg := fleetConfig(t, b.URL(), "dev1", agent.ModelConfig{ID: "lstm", Path: tflitetest.Path(t, "keras_lstm_mnist_ptq.tflite")})
	cfg.MQTT.Username = "dev1"
	cfg.MQTT.PasswordFile = writeFile(t, filepath.Join(dir, "pw"), []byte("pw1\n"), 0o600)
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	key := calKey(t, a.Report(), "lstm")
	seen := map[string]bool{}
	deadline := time.After(20 * time.Second)
	for !seen[fleet.Topic("edge", key)] {
		select {
		case m := <-ops.Chan():
			seen[m.Topic] = true
		case <-deadline:
			t.Fatalf("the device's fleet record did not arrive under the ACL; seen %v", seen)
		}
	}

	// The same credentials, writing where a device may not.
	c := paho.NewClient(b.ClientOptions("intruder", "dev1", "pw1"))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect as dev1: %v", tok.Error())
	}
	defer c.Disconnect(100)
	for _, topic := range []string{"edge/dev2/cmd/wake", "edge/dev1/acl-probe"} {
		if tok := c.Publish(topic, 1, false, []byte("probe")); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	deadline = time.After(10 * time.Second)
	for !seen["edge/dev1/acl-probe"] {
		select {
		case m := <-ops.Chan():
			seen[m.Topic] = true
		case <-deadline:
			t.Fatal("the device's write to its own topic did not arrive")
		}
	}
	// The allowed probe was sent after the denied one, on one connection:
	// had the denied one passed, it would have arrived first.
	if seen["edge/dev2/cmd/wake"] {
		t.Fatal("a device wrote into another device's commands")
	}
	if !seen["edge/dev1/status"] {
		t.Fatal("the agent's own status did not arrive under the ACL")
	}
}

// TestFleetSharesWhatItAlreadyKnew: a device calibrated before sharing was
// on offers its restored calibration once it joins a fleet.
func TestFleetSharesWhatItAlreadyKnew(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	cfg := fleetConfig(t, b.URL(), "veteran", agent.ModelConfig{ID: "lstm", Path: tflitetest.Path(t, "keras_lstm_mnist_ptq.tflite")})
	cfg.Fleet.Enabled = false
	a := start(t, cfg, agent.Options{})
	key := calKey(t, a.Report(), "lstm")
	a.Close()
	if _, ok := fleetRecords(t, b)[key]; ok {
		t.Fatal("published with sharing off")
	}
	cfg.Fleet.Enabled = true
	a = start(t, cfg, agent.Options{})
	defer a.Close()
	if s := statusOf(t, a, "lstm").Calibration; s.Status != storage.Restored {
		t.Fatalf("restart: %+v, want restored", s)
	}
	if r := waitRecord(t, b, key, "veteran"); r.Samples != 3 {
		t.Fatalf("shared record: %+v", r)
	}
}
