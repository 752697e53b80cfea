package bench_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-agent/edge-agent/agent/bench"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// The emulated SD card is a real throttle: a cold read through it runs at
// the card's rate (not the VM disk's hundreds of MB/s), and closing it
// leaves no loop device, mount or cgroup behind.
func TestSDCardThrottlesReads(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: the SD card needs root (loop device, mount, blkio cgroup)")
	}
	models := t.TempDir()
	src := filepath.Join(tflitetest.ModelsDir(t), "mobilenet_v2_1.0_224_quant.tflite") // 3.4 MB
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(models, "m.tflite"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	const rate = 8e6
	work := t.TempDir()
	dir, measured, closeCard, err := bench.SDCardForTest(work, models, rate)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("throttled to %.0f MB/s, a cold read measured %.1f MB/s", rate/1e6, measured/1e6)
	if measured > 1.5*rate || measured < rate/3 {
		t.Errorf("a cold read ran at %.1f MB/s through a card throttled to %.0f MB/s", measured/1e6, rate/1e6)
	}
	if err := closeCard(); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("losetup", "-j", filepath.Join(work, "sdcard.img")).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("loop device left behind: %s", out)
	}
	if mounts, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(mounts), filepath.Dir(dir)) {
		t.Errorf("card still mounted at %s", filepath.Dir(dir))
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/blkio/edge-agent-bench-*"); len(left) > 0 {
		t.Errorf("cgroups left behind: %v", left)
	}
}

// `edge-agent-bench naive MODEL=INPUT` answers each request on stdout as
// "index digest" (the process rows' baseline), and refuses a bad pair.
func TestNaiveProcessCommand(t *testing.T) {
	model := filepath.Join(tflitetest.ModelsDir(t), "xor_model.tflite")
	in := filepath.Join(t.TempDir(), "in.bin")
	if err := os.WriteFile(in, make([]byte, 8), 0o644); err != nil { // two float32 zeros
		t.Fatal(err)
	}
	code, stdout, stderr := benchMain(t, "naive", model+"="+in)
	if f := strings.Fields(stdout); code != 0 || len(f) != 2 || f[0] != "0" || len(f[1]) != 16 {
		t.Fatalf("exit %d, stdout %q, stderr %q: want one \"0 <digest>\" line", code, stdout, stderr)
	}
	if code, _, stderr := benchMain(t, "naive", model); code != 2 || !strings.Contains(stderr, "MODEL=INPUT") {
		t.Errorf("a bare model: exit %d, %q; want 2 naming MODEL=INPUT", code, stderr)
	}
}
