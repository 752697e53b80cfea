package agent_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// notifySocket is a NOTIFY_SOCKET the test owns, recording every datagram.
type notifySocket struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []received
}

type received struct {
	at    time.Time
	state string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	n := &notifySocket{conn: conn}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, received{time.Now(), string(buf[:k])})
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

func (n *notifySocket) states() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, len(n.msgs))
	for i, m := range n.msgs {
		out[i] = m.state
	}
	return out
}

func (n *notifySocket) waitFor(t *testing.T, state string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, s := range n.states() {
			if strings.Contains(s, state) {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %q within %v; got %q", state, within, n.states())
}

func (n *notifySocket) count(state string) int {
	c := 0
	for _, s := range n.states() {
		if strings.Contains(s, state) {
			c++
		}
	}
	return c
}

func index(states []string, s string) int {
	for i, x := range states {
		if strings.Contains(x, s) {
			return i
		}
	}
	return -1
}

func TestSystemdNotifySequenceAndWatchdog(t *testing.T) {
	n := listenNotify(t)
	const watchdog = 400 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", fmt.Sprint(watchdog.Microseconds()))
	cfg := testConfig(t, planModels(t)[:2]...) // xor (pinned), v1
	var stall atomic.Bool
	release := make(chan struct{})
	stalled := make(chan struct{}, 1)
	hook := func(_ context.Context, model string) {
		if stall.Load() && model == "v1" {
			select {
			case stalled <- struct{}{}:
			default:
			}
			<-release // ignores cancellation: a warm-up stuck in C
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, cfg, quietLog(), agent.Options{System: idleSystem, BeforePrewarm: hook}, agent.RunOptions{})
	}()
	n.waitFor(t, "READY=1", time.Minute)
	states := n.states()
	warm, ready := index(states, "STATUS=warm xor"), index(states, "READY=1")
	if index(states, "STATUS=opening state") != 0 || index(states, "STATUS=warming xor") < 0 || warm < 0 || warm > ready {
		t.Fatalf("sequence %q: want STATUS lines, the pinned model warm, then READY", states)
	}
	// Pings while the loops are alive.
	time.Sleep(3 * watchdog)
	if c := n.count("WATCHDOG=1"); c < 3 {
		t.Fatalf("%d watchdog pings in %v", c, 3*watchdog)
	}

	// Stall the planner: a wake whose warm-up never returns, then a newer
	// wake the planner must wait for.
	// The second signal is sent once the first wake's warm-up is stuck, so
	// the two cannot merge into one.
	stall.Store(true)
	_ = syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	select {
	case <-stalled:
	case <-time.After(time.Minute):
		t.Fatal("the first wake never reached v1's warm-up")
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	time.Sleep(watchdog) // the planner's last beat goes stale
	before := n.count("WATCHDOG=1")
	time.Sleep(3 * watchdog)
	if after := n.count("WATCHDOG=1"); after != before {
		t.Fatalf("watchdog pinged %d times while the planner was stalled", after-before)
	}
	stall.Store(false)
	close(release)
	time.Sleep(3 * watchdog)
	if after := n.count("WATCHDOG=1"); after == before {
		t.Fatal("pings did not resume after the stall ended")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if last := n.states()[len(n.states())-1]; !strings.Contains(strings.Join(n.states(), "|"), "STOPPING=1") || strings.Contains(last, "READY") {
		t.Fatalf("no STOPPING at the end: %q", n.states())
	}
}

func TestReloadKeepsWarmModels(t *testing.T) {
	models := planModels(t)
	cfg := testConfig(t, models[:2]...) // xor (pinned), v1
	cfg.Pool.Budget = 64 << 20
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	before := loadsOf(a)

	next := cfg
	next.Pool.Budget = 128 << 20
	next.Models = append(append([]agent.ModelConfig{}, models[:2]...), models[3]) // + lstm
	res, err := a.Reload(context.Background(), next)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Added, ",") != "lstm" || strings.Join(res.Unchanged, ",") != "v1,xor" || len(res.Removed)+len(res.Changed)+len(res.Failed) != 0 {
		t.Fatalf("reload %+v", res)
	}
	if s := a.Pool().Stats(); s.Budget != 128<<20 {
		t.Fatalf("budget %d", s.Budget)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !a.Pool().IsWarm("lstm") {
		if time.Now().After(deadline) {
			t.Fatal("added model not warmed after reload")
		}
		time.Sleep(10 * time.Millisecond)
	}
	after := loadsOf(a)
	for _, id := range []string{"xor", "v1"} {
		if after[id] != before[id] {
			t.Fatalf("%s reloaded: %d → %d warm-ups", id, before[id], after[id])
		}
	}
	// Removing a model and changing another's file reloads just those.
	next2 := next
	next2.Models = []agent.ModelConfig{models[0], models[3]}
	next2.Models[1].Path = copyFile(t, models[3].Path, filepath.Join(t.TempDir(), "lstm-copy.tflite"))
	res, err = a.Reload(context.Background(), next2)
	if err != nil || strings.Join(res.Removed, ",") != "v1" || strings.Join(res.Changed, ",") != "lstm" || strings.Join(res.Unchanged, ",") != "xor" {
		t.Fatalf("second reload %+v %v", res, err)
	}
	// A bad configuration is refused and the old one kept.
	bad := next2
	bad.LogLevel = "loud"
	if _, err := a.Reload(context.Background(), bad); err == nil {
		t.Fatal("invalid configuration accepted")
	}
}

func TestSIGHUPReloadsConfig(t *testing.T) {
	dir := t.TempDir()
	models := planModels(t)
	cfgPath := runConfig(t, dir, "[pool]\nbudget = \"64MiB\"\n", models[0], models[1])
	cmd, logs, done := startRun(t, dir, "--config", cfgPath)
	runConfig(t, dir, "[pool]\nbudget = \"128MiB\"\n", models[0], models[1], models[3])
	cmd.Process.Signal(syscall.SIGHUP)
	// The added model was warmed: by the reload's wake, or by the start's
	// plan when the signal came before requests had been quiet long
	// enough for it (agent/quiet.go).
	logs.waitFor(t, cmd, `msg="model warm" model=lstm`)
	stopRun(t, cmd, logs, done)
	l := logs.String()
	if !strings.Contains(l, "msg=reloaded added=[lstm]") || !strings.Contains(l, "unchanged=\"[v1 xor]\"") {
		t.Fatalf("reload log:\n%s", l)
	}
	if n := strings.Count(l, `msg="model warm" model=xor`); n != 1 {
		t.Fatalf("xor warmed %d times (a warm model was reloaded):\n%s", n, l)
	}
}

func TestSIGTERMStopsInBoundedTimeOffline(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	dir := t.TempDir()
	cfgPath := runConfig(t, dir, fmt.Sprintf("[mqtt]\nbrokers = [%q]\ndevice = \"dev1\"\n", b.URL()),
		agent.ModelConfig{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite"), Pinned: true})
	cmd, logs, done := startRun(t, dir, "--config", cfgPath)
	stopAt := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs)
		}
	case <-time.After(15 * time.Second): // the unit's TimeoutStopSec
		cmd.Process.Kill()
		t.Fatalf("not stopped within 15s:\n%s", logs)
	}
	t.Logf("stopped %v after SIGTERM", time.Since(stopAt))
	// The state is consistent and the retained status says offline.
	s, rep, err := storage.Open(filepath.Join(dir, "state"), storage.Options{})
	if err != nil || rep.Corruption != nil {
		t.Fatalf("state after stop: %v %+v", err, rep.Corruption)
	}
	s.Close()
	sub := b.Subscribe(t, "fleet", "edge/dev1/status")
	if m := sub.Next(t, 10*time.Second); !m.Retained || !strings.Contains(string(m.Payload), `"status":"offline"`) {
		t.Fatalf("status after SIGTERM: %v retained=%v", m, m.Retained)
	}
}
