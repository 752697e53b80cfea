package agent_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// The first request is accepted before the other models are registered: a
// model whose file read blocks (configured first) delays neither Start nor
// a request for another model, which is registered ahead of it. Once the
// read goes on, the report lists both, in configured order.
func TestRequestServedWhileAnotherModelFileBlocks(t *testing.T) {
	slow := tflitetest.Path(t, "xor_model.tflite")
	cfg := testConfig(t,
		agent.ModelConfig{ID: "slow", Path: slow},
		agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	reading := make(chan struct{})
	a := agent.New(cfg, quietLog(), agent.Options{BeforeModelRead: func(path string) {
		if path == slow {
			close(reading)
			<-release // storage that does not answer
		}
	}})
	started := make(chan error, 1)
	go func() { started <- a.Start(context.Background()) }()
	released := false
	unblock := func() {
		if !released {
			released = true
			close(release)
		}
	}
	defer func() {
		unblock()
		a.Close()
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second): // a failure bound, not a measure
		unblock()
		<-started
		t.Fatal("Start waited for a model file whose read blocks")
	}
	<-reading // slow's registration has begun, and cannot end before release
	cat := readShared(t, "cat.bmp")
	if _, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", Binary: true, Model: "v1", ID: "c", Payload: cat}); err != nil {
		t.Fatalf("request for v1 while slow's file blocks: %v", err)
	}
	unblock()
	rep := a.Report() // waits for every model
	if len(rep.Models) != 2 || rep.Models[0].ID != "slow" || rep.Models[1].ID != "v1" {
		t.Fatalf("models in the report: %+v", rep.Models)
	}
	for _, m := range rep.Models {
		if m.Error != nil {
			t.Fatalf("%s: %+v", m.ID, m.Error)
		}
	}
}

// At a start, a model no request asked for is read only once the start's
// requests are answered: its check and hash would share the cores with
// them. It is registered then, without a request.
func TestUnaskedModelReadAfterTheStartsRequests(t *testing.T) {
	other := tflitetest.Path(t, "xor_model.tflite")
	cfg := testConfig(t,
		agent.ModelConfig{ID: "other", Path: other}, // first in order
		agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")})
	var answered atomic.Bool
	read := make(chan bool, 1) // whether v1 had answered when other was read
	a := agent.New(cfg, quietLog(), agent.Options{BeforeModelRead: func(path string) {
		if path == other {
			select {
			case read <- answered.Load():
			default:
			}
		}
	}})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", Binary: true, Model: "v1", ID: "c", Payload: readShared(t, "cat.bmp")}); err != nil {
		t.Fatal(err)
	}
	answered.Store(true)
	rep := a.Report() // waits for every model
	select {
	case after := <-read:
		if !after {
			t.Fatal("other's file was read while the start's request for v1 was being answered")
		}
	default:
		t.Fatal("other was never read")
	}
	if len(rep.Models) != 2 || rep.Models[0].ID != "other" || rep.Models[0].Error != nil {
		t.Fatalf("models in the report: %+v", rep.Models)
	}
}

// A restart with the same model file reads nothing of it before the first
// request (digest and facts are kept by file identity in the state file);
// a file replaced by another of the same size is read and hashed again.
func TestRestartReadsModelFileOnlyWhenReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "v1.tflite")
	copyTo := func(dst string) {
		t.Helper()
		in, err := os.Open(tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"))
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		out, err := os.Create(dst)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	copyTo(path)
	cfg := testConfig(t, agent.ModelConfig{ID: "v1", Path: path})
	var mu sync.Mutex
	reads := 0
	o := agent.Options{BeforeModelRead: func(p string) {
		if p == path {
			mu.Lock()
			reads++
			mu.Unlock()
		}
	}}
	readsNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := reads
		reads = 0
		return n
	}
	cat := readShared(t, "cat.bmp")
	run := func() agent.ModelReport {
		t.Helper()
		a := start(t, cfg, o)
		defer a.Close()
		if _, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", Binary: true, Model: "v1", ID: "c", Payload: cat}); err != nil {
			t.Fatal(err)
		}
		return byID(t, a.Report(), "v1")
	}
	first := run()
	if n := readsNow(); n == 0 || first.DigestCached {
		t.Fatalf("first start: %d reads, digest cached %v", n, first.DigestCached)
	}
	again := run()
	if n := readsNow(); n != 0 || !again.DigestCached || again.SHA256 != first.SHA256 {
		t.Fatalf("restart, same file: %d reads, digest cached %v, same digest %v", n, again.DigestCached, again.SHA256 == first.SHA256)
	}
	// The same bytes renamed over it: same size, a new identity.
	copyTo(path + ".new")
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	replaced := run()
	if n := readsNow(); n == 0 || replaced.DigestCached {
		t.Fatalf("restart, replaced file: %d reads, digest cached %v", n, replaced.DigestCached)
	}
}

// A start answers the first request for a model before it keeps the
// model's version (the rollback copy, its fsync and the versions record):
// the keep is held here, and the request is answered meanwhile. Once
// released, the copy is kept under the state dir.
func TestRequestAnsweredWhileVersionKept(t *testing.T) {
	cfg := testConfig(t, agent.ModelConfig{ID: "v1", Path: tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite")})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	held := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	a := agent.New(cfg, quietLog(), agent.Options{BeforeVersionKeep: func(model string) {
		if model == "v1" {
			close(held)
			<-release
		}
	}})
	started := make(chan error, 1)
	go func() { started <- a.Start(context.Background()) }()
	answered := make(chan error, 1)
	go func() {
		if err := <-started; err != nil {
			answered <- err
			return
		}
		_, err := a.Command(context.Background(), mqtt.Command{Verb: "infer", Binary: true, Model: "v1", ID: "c", Payload: readShared(t, "cat.bmp")})
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			unblock()
			a.Close()
			t.Fatalf("request while the version is kept: %v", err)
		}
	case <-time.After(60 * time.Second): // a failure bound, not a measure
		unblock()
		<-answered
		a.Close()
		t.Fatal("the first request waited for the model's version copy")
	}
	<-held // the keep began after the model was admitted, and is held
	unblock()
	a.Close()
	kept, err := filepath.Glob(filepath.Join(cfg.StateDir, "versions", "v1", "*.tflite"))
	if err != nil || len(kept) != 1 {
		t.Fatalf("kept versions of v1: %v %v", kept, err)
	}
}

// A model a rescan adds is served from its copy at once, as at a start:
// the copy's fsync and the versions record come after (KeepLater). The
// keep is held here; the rescan returns and the model answers meanwhile,
// and once released the copy is kept under the state dir.
func TestRescanAddsModelBeforeItsVersionIsKept(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(tflitetest.Path(t, "xor_model.tflite"), filepath.Join(dir, "xor.tflite")); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.ModelsDir = dir
	release := make(chan struct{})
	held := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	a := start(t, cfg, agent.Options{BeforeVersionKeep: func(model string) {
		if model == "v1" {
			close(held)
			<-release
		}
	}})
	if err := os.Symlink(tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"), filepath.Join(dir, "v1.tflite")); err != nil {
		t.Fatal(err)
	}
	answered := make(chan error, 1)
	go func() {
		res, err := a.Command(context.Background(), mqtt.Command{Verb: "rescan"})
		if r, ok := res.(agent.ReloadResult); err == nil && (!ok || !slices.Equal(r.Added, []string{"v1"})) {
			err = fmt.Errorf("rescan: %+v", res)
		}
		if err == nil {
			_, err = a.Command(context.Background(), mqtt.Command{Verb: "infer", Binary: true, Model: "v1", ID: "c", Payload: readShared(t, "cat.bmp")})
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			unblock()
			a.Close()
			t.Fatalf("rescan and request while the version is kept: %v", err)
		}
	case <-time.After(60 * time.Second): // a failure bound, not a measure
		unblock()
		a.Close()
		t.Fatal("the rescan or the request waited for the added model's version copy")
	}
	select {
	case <-held: // the keep began after the model was admitted, and is held
	case <-time.After(60 * time.Second):
		a.Close()
		t.Fatal("the added model's version was never kept after the rescan")
	}
	unblock()
	a.Close()
	kept, err := filepath.Glob(filepath.Join(cfg.StateDir, "versions", "v1", "*.tflite"))
	if err != nil || len(kept) != 1 {
		t.Fatalf("kept versions of v1: %v %v", kept, err)
	}
}

// A model a rescan adds is calibrated only once requests have left the
// pool alone for calibration.idle_after counted from the rescan: a
// deployment tool that adds a model asks it at once, and the calibrator's
// commit and measuring loads must not share the cores with that first
// request. The agent here was idle for longer than idle_after before the
// rescan.
func TestRescanAddedModelCalibratesAfterIdleFromTheRescan(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(tflitetest.Path(t, "xor_model.tflite"), filepath.Join(dir, "xor.tflite")); err != nil {
		t.Fatal(err)
	}
	const idle = 400 * time.Millisecond
	cfg := testConfig(t)
	cfg.ModelsDir = dir
	cfg.Calibration.IdleAfter = idle
	began := make(chan time.Time, 1)
	a := start(t, cfg, agent.Options{BeforeCalibrate: func(_ context.Context, model string) {
		if model == "v1" {
			began <- time.Now()
		}
	}})
	defer a.Close()
	time.Sleep(idle) // idle since the start: the calibrator would go at once
	if err := os.Symlink(tflitetest.Path(t, "mobilenet_v1_0.25_128_quant.tflite"), filepath.Join(dir, "v1.tflite")); err != nil {
		t.Fatal(err)
	}
	rescanned := time.Now()
	if _, err := a.Command(context.Background(), mqtt.Command{Verb: "rescan"}); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-began:
		// A lower bound, which only a calibrator that ignores the rescan
		// breaks (the pool's Activity was idle for longer than idle).
		if d := at.Sub(rescanned); d < idle {
			t.Fatalf("v1's calibration began %v after the rescan that added it, want ≥ idle_after (%v)", d, idle)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("v1 was never calibrated")
	}
}
