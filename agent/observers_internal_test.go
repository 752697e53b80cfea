package agent

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent/observe"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// serve.go hands what a request produced to the observer list and calls
// none of the observers itself: no latency, Prometheus, usage, parity,
// rollback, readiness, rewarm or wake-tracker call is left in it, and it
// imports no package of theirs.
func TestServeKnowsNoObservers(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "serve.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range f.Imports {
		for _, pkg := range []string{"/agent/metrics", "/agent/update", "prometheus"} {
			if strings.Contains(imp.Path.Value, pkg) {
				t.Errorf("serve.go imports %s", imp.Path.Value)
			}
		}
	}
	banned := map[string]bool{"noteOutcome": true, "recordParity": true, "upd": true, "usage": true, "lat": true, "prom": true,
		"noteLoad": true, "kickRewarm": true, "wake": true, "firstRequest": true, "observeRequest": true, "parity": true}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && banned[sel.Sel.Name] {
			t.Errorf("serve.go reaches an observer directly: .%s", sel.Sel.Name)
		}
		return true
	})
}

// The agent's list holds its observers in their order, and every request
// reaches it exactly once, however it ends: answered (with the version,
// the input by reference and whether it loaded), failed at its load, or
// failed at its run.
func TestEveryRequestReachesTheObserversOnce(t *testing.T) {
	cfg := DefaultConfig()
	off := false
	cfg.Updates.Watch = &off
	cfg.MQTT.LocalListen = ""
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.Power.SysfsRoot = filepath.Join("..", "power", "testdata", "rpi")
	cfg.Models = []ModelConfig{{ID: "xor", Path: tflitetest.Path(t, "xor_model.tflite")}}
	a := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if n := len(a.observers); n != 4 {
		t.Fatalf("%d observers, want 4 (load, update, usage, request record)", n)
	}
	if _, ok := a.observers[3].(requestRecorder); !ok {
		t.Fatalf("the request record is not last: %T", a.observers[3])
	}
	var mu sync.Mutex
	var seen []observe.RequestDone
	a.observers = append(a.observers, observe.Func(func(d observe.RequestDone) {
		mu.Lock()
		seen = append(seen, d)
		mu.Unlock()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Close() }()
	_ = a.pool.Evict("xor")
	in := make([]byte, 8) // two float32 zeros
	if _, _, err := a.infer(ctx, inferCall{model: "xor", tensor: in, transport: "mqtt"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.infer(ctx, inferCall{model: "nope", tensor: in, transport: "mqtt"}); err == nil {
		t.Fatal("an unknown model answered")
	}
	if _, _, err := a.infer(ctx, inferCall{model: "xor", tensor: in[:4], transport: "http"}); err == nil {
		t.Fatal("a short tensor answered")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("%d requests observed, want 3: %+v", len(seen), seen)
	}
	ok, load, run := seen[0], seen[1], seen[2]
	if ok.Err != nil || ok.Model != "xor" || ok.Answered != "xor" || ok.Version == "" || ok.AnsweredVersion != ok.Version ||
		!ok.Loaded || ok.Warm || len(ok.Tensor) != 8 || &ok.Tensor[0] != &in[0] || ok.E2E <= 0 || ok.Transport != "mqtt" {
		t.Errorf("answered request observed as %+v", ok)
	}
	if load.Err == nil || load.Stage != observe.StageLoad || load.Ran() {
		t.Errorf("unknown model observed as %+v", load)
	}
	if run.Err == nil || run.Stage != observe.StageRun || run.Ran() || run.Loaded || run.Transport != "http" {
		t.Errorf("failed run observed as %+v", run)
	}
}
