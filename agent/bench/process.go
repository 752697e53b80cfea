package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edge-agent/edge-agent/mqtt"
)

// Separate processes over MQTT: what a device sees after boot. The broker
// (a real mosquitto on a free loopback port) is already up, as a system
// service would be; the clock starts when the process is spawned. The agent
// (the edge-agent binary, with a configuration file) is asked once its
// retained status says online, since a command published before it
// subscribed would be lost; naive is a process that loads each model and
// answers on stdout (`edge-agent-bench naive`), the same work as the
// in-process naive loop. Answers are compared with naive's output bytes.

// ProcessRows are the startup and first-start comparisons as processes.
type ProcessRows struct {
	// ToFirst[config] is spawn → first correct answer for the startup
	// model (configs Naive, Cold, Restored), ms.
	ToFirst map[string]Dist
	// ToAnswer[config][model] is spawn → each first-start model's answer.
	ToAnswer map[string]map[string]Dist
	// Online is spawn → the agent's retained online status (empty state).
	Online Dist
	// NotMeasured is why the rows are missing ("" when measured).
	NotMeasured string
}

type procEnv struct {
	agentBin string
	benchBin string
	broker   string // tcp://127.0.0.1:port
	work     string
}

// processRows measures the rows; a missing binary or broker is reported,
// not an error.
func processRows(ctx context.Context, o Options, work string) ProcessRows {
	out := ProcessRows{ToFirst: map[string]Dist{}, ToAnswer: map[string]map[string]Dist{}}
	env, stop, err := newProcEnv(ctx, o, work)
	if err != nil {
		out.NotMeasured = err.Error()
		o.Log.Warn("bench: process rows not measured", "err", err)
		return out
	}
	defer stop()
	if err := env.measure(ctx, o, &out); err != nil {
		out = ProcessRows{NotMeasured: err.Error()}
		o.Log.Warn("bench: process rows failed", "err", err)
	}
	return out
}

func newProcEnv(ctx context.Context, o Options, work string) (*procEnv, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	env := &procEnv{benchBin: self, agentBin: o.AgentBin, work: filepath.Join(work, "proc")}
	if env.agentBin == "" {
		env.agentBin = filepath.Join(filepath.Dir(self), "edge-agent")
	}
	if !strings.HasPrefix(filepath.Base(self), "edge-agent-bench") {
		return nil, nil, fmt.Errorf("the naive process is edge-agent-bench itself, but this is %s", filepath.Base(self))
	}
	if _, err := os.Stat(env.agentBin); err != nil {
		return nil, nil, fmt.Errorf("no agent binary (--agent-bin; make bench builds bin/edge-agent): %w", err)
	}
	mosq, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, nil, fmt.Errorf("mosquitto not found: %w", err)
	}
	if err := os.MkdirAll(env.work, 0o755); err != nil {
		return nil, nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	conf := filepath.Join(env.work, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", port)), 0o644); err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, mosq, "-c", conf)
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("mosquitto: %w", err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	env.broker = fmt.Sprintf("tcp://127.0.0.1:%d", port)
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			_ = c.Close()
			break
		}
		if i > 200 {
			stop()
			return nil, nil, fmt.Errorf("mosquitto did not listen: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return env, stop, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// procModel is one model a process run asks for.
type procModel struct {
	id, path, inputFile string
	input               []byte
}

func (e *procEnv) measure(ctx context.Context, o Options, out *ProcessRows) error {
	// The startup model, then the first-start models.
	startModel := "mobilenet_v2_1.0_224_quant.tflite"
	sm := procModel{id: "m", path: filepath.Join(o.Models, startModel)}
	var err error
	if sm.input, err = inputFor(sm.path); err != nil {
		return err
	}
	var fsm []procModel
	for _, m := range firstStartModels {
		if o.Quick && m.id == "deeplab" {
			continue
		}
		pm := procModel{id: m.id, path: filepath.Join(o.Models, m.file)}
		if pm.input, err = inputFor(pm.path); err != nil {
			return err
		}
		fsm = append(fsm, pm)
	}
	for i, m := range append([]procModel{sm}, fsm...) {
		f := filepath.Join(e.work, fmt.Sprintf("input-%d-%s.bin", i, m.id))
		if err := os.WriteFile(f, m.input, 0o644); err != nil {
			return err
		}
		if i == 0 {
			sm.inputFile = f
		} else {
			fsm[i-1].inputFile = f
		}
	}
	mains, none := fixtureRoot(e.work, 0), fixtureRoot(e.work, 5)
	to := map[string][]float64{}
	fsTo := map[string]map[string][]float64{Naive: {}, Cold: {}}
	var online []float64
	for rep := range o.Reps {
		// Startup: naive, agent empty state, agent restored (nothing
		// prewarmed), each with the model out of the page cache.
		dropCache(sm.path)
		want, err := e.naive(ctx, []procModel{sm})
		if err != nil {
			return err
		}
		to[Naive] = append(to[Naive], want[0].ms)
		state := filepath.Join(e.work, fmt.Sprintf("state-%d", rep))
		for _, c := range []struct {
			config, sysfs string
		}{{Cold, mains}, {Restored, none}} {
			dropCache(sm.path)
			got, on, err := e.agent(ctx, state, c.sysfs, []procModel{sm}, fmt.Sprintf("bench%d%s", rep, c.config[6:]))
			if err != nil {
				return fmt.Errorf("%s: %w", c.config, err)
			}
			if got[0].digest != want[0].digest {
				return fmt.Errorf("%s: the agent's answer differs from naive's", c.config)
			}
			to[c.config] = append(to[c.config], got[0].ms)
			if c.config == Cold {
				online = append(online, on)
			}
		}
		// First start: every model asked at spawn (the agent: once online).
		for _, m := range fsm {
			dropCache(m.path)
		}
		want, err = e.naive(ctx, fsm)
		if err != nil {
			return err
		}
		for _, m := range fsm {
			dropCache(m.path)
		}
		got, _, err := e.agent(ctx, filepath.Join(e.work, fmt.Sprintf("fs-state-%d", rep)), mains, fsm, fmt.Sprintf("benchfs%d", rep))
		if err != nil {
			return fmt.Errorf("first start: %w", err)
		}
		for i, m := range fsm {
			if got[i].digest != want[i].digest {
				return fmt.Errorf("first start: %s: the agent's answer differs from naive's", m.id)
			}
			fsTo[Naive][m.id] = append(fsTo[Naive][m.id], want[i].ms)
			fsTo[Cold][m.id] = append(fsTo[Cold][m.id], got[i].ms)
		}
	}
	for c, v := range to {
		out.ToFirst[c] = dist(v)
	}
	for c, byModel := range fsTo {
		out.ToAnswer[c] = map[string]Dist{}
		for id, v := range byModel {
			out.ToAnswer[c][id] = dist(v)
		}
	}
	out.Online = dist(online)
	return nil
}

// procAnswer is one answer: spawn → answer, and the output's digest.
type procAnswer struct {
	ms     float64
	digest string
}

// naive spawns `edge-agent-bench naive` for models and times each answer
// line from the spawn.
func (e *procEnv) naive(ctx context.Context, models []procModel) ([]procAnswer, error) {
	args := []string{"naive"}
	for _, m := range models {
		args = append(args, m.path+"="+m.inputFile)
	}
	cmd := exec.CommandContext(ctx, e.benchBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	res := make([]procAnswer, len(models))
	sc := bufio.NewScanner(stdout)
	n := 0
	for sc.Scan() {
		at := time.Since(t0)
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		i, err := strconv.Atoi(f[0])
		if err != nil || i < 0 || i >= len(models) {
			continue
		}
		res[i] = procAnswer{ms: msOf(at), digest: f[1]}
		n++
	}
	if err := cmd.Wait(); err != nil || n != len(models) {
		return nil, fmt.Errorf("naive process: %v (%d of %d answers): %s", err, n, len(models), stderr.String())
	}
	return res, nil
}

// agent spawns the edge-agent binary on a fresh device id, waits for its
// retained online status and asks for every model at once (raw output, to
// compare with naive's bytes).
func (e *procEnv) agent(ctx context.Context, state, sysfs string, models []procModel, device string) ([]procAnswer, float64, error) {
	conf := filepath.Join(e.work, device+".toml")
	var b strings.Builder
	// max_payload: deeplab's raw input tensor (513×513×3) is 1.05 MB in
	// base64, over the 1 MiB default; a client would send the image.
	fmt.Fprintf(&b, "state_dir = %q\nlog_level = \"warn\"\n[power]\nsysfs_root = %q\nbusy_load_per_core = 100.0\n[prewarm]\nkeep_alive = \"0s\"\n[updates]\nwatch = false\n[mqtt]\nbrokers = [%q]\ndevice = %q\nlocal_listen = \"\"\nmax_payload = \"4MiB\"\n",
		state, sysfs, e.broker, device)
	for _, m := range models {
		fmt.Fprintf(&b, "[[models]]\nid = %q\npath = %q\n", m.id, m.path)
	}
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, 0, err
	}
	online := make(chan struct{})
	var once sync.Once
	watch := paho.NewClient(paho.NewClientOptions().AddBroker(e.broker).SetClientID("bench-watch-" + device).SetCleanSession(true))
	if t := watch.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return nil, 0, fmt.Errorf("watch client: %v", t.Error())
	}
	defer watch.Disconnect(50)
	if t := watch.Subscribe("edge/"+device+"/status", 1, func(_ paho.Client, m paho.Message) {
		if bytes.Contains(m.Payload(), []byte(`"online"`)) {
			once.Do(func() { close(online) })
		}
	}); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return nil, 0, fmt.Errorf("watch subscribe: %v", t.Error())
	}
	// The client is connected and subscribed to the replies before the
	// agent starts, as a device's client is after boot: what is measured
	// is the agent, not a command-line caller's connect (mqtt.Call dials
	// for every call).
	replies := make(map[string]chan mqtt.CallReply, len(models))
	for _, m := range models {
		replies["r-"+m.id] = make(chan mqtt.CallReply, 1)
	}
	if t := watch.Subscribe("edge/"+device+"/reply/#", 1, func(_ paho.Client, msg paho.Message) {
		var r mqtt.CallReply
		if json.Unmarshal(msg.Payload(), &r) != nil {
			return
		}
		if ch, ok := replies[path.Base(msg.Topic())]; ok {
			select {
			case ch <- r:
			default:
			}
		}
	}); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return nil, 0, fmt.Errorf("reply subscribe: %v", t.Error())
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, e.agentBin, "run", "--config", conf)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	select {
	case <-online:
	case <-cctx.Done():
		return nil, 0, fmt.Errorf("agent never online: %s", stderr.String())
	}
	on := msOf(time.Since(t0))
	res := make([]procAnswer, len(models))
	errs := make([]error, len(models))
	var wg sync.WaitGroup
	for i, m := range models {
		wg.Go(func() {
			payload, _ := json.Marshal(map[string]any{"model": m.id, "input": base64.StdEncoding.EncodeToString(m.input), "raw": true})
			r, err := callOn(cctx, watch, "edge/"+device+"/cmd/infer/r-"+m.id, payload, replies["r-"+m.id])
			at := time.Since(t0)
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("%s: %w", m.id, err)
			case !r.OK:
				errs[i] = fmt.Errorf("%s: %s", m.id, r.Result)
				if r.Error != nil {
					errs[i] = fmt.Errorf("%s: %s: %s", m.id, r.Error.Code, r.Error.Message)
				}
			default:
				var rep struct {
					Output []byte `json:"output"`
				}
				if err := json.Unmarshal(r.Result, &rep); err != nil {
					errs[i] = err
					return
				}
				res[i] = procAnswer{ms: msOf(at), digest: digestOf(rep.Output)}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, 0, fmt.Errorf("%w (agent log: %s)", err, stderr.String())
	}
	return res, on, nil
}

// callOn publishes one command on a connected client and waits for its
// reply (the same topics as mqtt.Call, without its connect).
func callOn(ctx context.Context, c paho.Client, topic string, payload []byte, reply <-chan mqtt.CallReply) (mqtt.CallReply, error) {
	if t := c.Publish(topic, 1, false, payload); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return mqtt.CallReply{}, fmt.Errorf("publish %s: %v", topic, t.Error())
	}
	select {
	case r := <-reply:
		return r, nil
	case <-ctx.Done():
		return mqtt.CallReply{}, fmt.Errorf("no reply on %s: %w", topic, ctx.Err())
	}
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// naiveCmd is `edge-agent-bench naive MODEL=INPUT...`: the naive loop as
// its own process (the process rows' baseline). Each model loads at its
// request, one goroutine per request, one thread per core; each answer is
// printed as "index digest" the moment it is ready.
func naiveCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("naive", stderr)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() == 0 {
		return usageError{errors.New("want MODEL=INPUT pairs (an input is a raw tensor file)")}
	}
	var mu sync.Mutex
	errs := make([]error, fs.NArg())
	var wg sync.WaitGroup
	for i, pair := range fs.Args() {
		model, input, ok := strings.Cut(pair, "=")
		if !ok {
			return usageError{fmt.Errorf("%q is not MODEL=INPUT", pair)}
		}
		wg.Go(func() {
			in, err := os.ReadFile(input)
			if err != nil {
				errs[i] = err
				return
			}
			n := newNaive(model, runtime.NumCPU())
			defer n.Close()
			out, err := n.Infer(in, nil)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", model, err)
				return
			}
			mu.Lock()
			fmt.Fprintf(stdout, "%d %s\n", i, digestOf(out))
			mu.Unlock()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
