package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	edgecli "github.com/edge-agent/edge-agent/agent/cli"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
)

// tryIt returns the shell lines of README.md's try-it block (between the
// try-it markers), so this test follows the README as it changes.
func tryIt(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "<!-- try-it")
	if block, _, ok2 := strings.Cut(block, "<!-- /try-it -->"); ok && ok2 {
		var lines []string
		sc := bufio.NewScanner(strings.NewReader(block))
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l == "" || strings.HasPrefix(l, "```") || strings.HasPrefix(l, "#") || strings.HasSuffix(l, "-->") {
				continue
			}
			lines = append(lines, l)
		}
		if len(lines) > 0 {
			return lines
		}
	}
	t.Fatal("README.md has no try-it block between <!-- try-it ... --> and <!-- /try-it -->")
	return nil
}

// The README's try-it block runs clean against `edge-agent run` on its
// defaults in a fresh folder (the generated demo model), line by line as a
// user pastes it; `bin/edge-agent` is this test binary.
func TestREADMETryIt(t *testing.T) {
	lines := tryIt(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "bin", "edge-agent"), []byte("#!/bin/sh\nEDGE_AGENT_TEST_CLI=1 exec "+os.Args[0]+` "$@"`+"\n"), 0o755)
	// The agent's broker and `call` meet on a free port, not on 1883.
	t.Setenv("EDGE_AGENT_MQTT_LOCAL_LISTEN", mqtttest.FreeAddr(t))
	cmd, logs, done := startRun(t, dir)
	defer stopRun(t, cmd, logs, done)
	for _, l := range lines {
		sh := exec.Command("sh", "-ec", l)
		sh.Dir = dir
		out, err := sh.CombinedOutput()
		if err != nil {
			t.Fatalf("README try-it line\n  %s\nfails: %v\n%s", l, err, out)
		}
		t.Logf("%s\n%s", l, out)
	}
}

// Flags go before or after the verb: `call --broker URL status` works.
func TestCallFlagsEitherSideOfTheVerb(t *testing.T) {
	addr := mqtttest.FreeAddr(t)
	cfg := testConfig(t)
	cfg.MQTT.LocalListen, cfg.MQTT.Device = addr, "dev1"
	a := start(t, cfg, agent.Options{})
	defer a.Close()
	broker := "tcp://" + addr
	for _, args := range [][]string{
		{"call", "--broker", broker, "--device", "dev1", "status", "--json"},
		{"call", "status", "--broker", broker, "--device", "dev1", "--json"},
		{"call", "--json", "--broker", broker, "status", "--device", "dev1"},
	} {
		r := cli(t, args...)
		var st struct{ OK bool }
		if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil || !st.OK {
			t.Errorf("%v: exit %d %v\n%s%s", args, r.code, err, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{
		{"call", "--broker", broker, "--device", "dev1", "set-budget", "64MiB"},
		{"call", "set-budget", "--broker", broker, "64MiB", "--device", "dev1"},
	} {
		if r := cli(t, args...); r.code != 0 {
			t.Errorf("%v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
	if r := cli(t, "call", "--broker", broker, "status", "extra"); r.code != edgecli.ExitUsage || !strings.Contains(r.stderr, `"extra"`) {
		t.Errorf("a stray argument: exit %d %s, want usage naming it", r.code, r.stderr)
	}
}

// help, -h and --help print usage and run nothing, wherever they are
// asked: `run help` does not start an agent (no state folder appears).
func TestCLIHelpRunsNothing(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"run", "help"}, {"run", "-h"}, {"run", "--config", "x.toml", "help"},
		{"call", "help"}, {"call", "-h"}, {"call", "status", "-h"}, {"call", "--broker", "tcp://127.0.0.1:1", "help"},
		{"infer", "help"}, {"models", "help"}, {"models", "inspect", "-h"}, {"models", "gen", "help"}, {"config", "help"},
		{"homeassistant", "--help"}, {"homeassistant", "remove", "-h"}, {"version", "-h"}} {
		dir := t.TempDir()
		cmd := cliCmd(t, args...)
		cmd.Dir = dir
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		go func() { <-ctx.Done(); _ = cmd.Process.Kill() }()
		err := cmd.Run()
		cancel()
		if err != nil || !strings.Contains(out.String()+errb.String(), "sage") {
			t.Errorf("%v: %v, want usage and exit 0\n%s%s", args, err, out.String(), errb.String())
		}
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			t.Errorf("%v: ran work (made %s)", args, ents[0].Name())
		}
	}
}
