package bench_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// help never runs work: each form prints usage and exits at once (the
// full run takes minutes; before, `help` started it).
func TestBenchHelpRunsNothing(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"replay", "help"}, {"trace", "-h"}, {"zoo", "--help"}, {"--quick", "-h"}} {
		start := time.Now()
		out := filepath.Join(t.TempDir(), "report")
		code, stdout, stderr := benchMain(t, append(args, "--out", out)...)
		if code != 0 || stdout+stderr == "" || !strings.Contains(stdout+stderr, "-models") && !strings.Contains(stdout+stderr, "Usage") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q: want usage and 0", args, code, stdout, stderr)
		}
		if _, err := os.Stat(out); err == nil || time.Since(start) > 5*time.Second {
			t.Errorf("%v: did work (report folder made, or %s)", args, time.Since(start))
		}
	}
	if code, _, stderr := benchMain(t, "halp"); code != 2 || !strings.Contains(stderr, `"halp"`) {
		t.Errorf("unknown argument: exit %d, %q; want 2 naming it", code, stderr)
	}
}

// The bench checks its inputs before any work: a missing folder, or one
// lacking a model it needs, fails at once naming what is missing.
func TestBenchChecksInputsFirst(t *testing.T) {
	shared := tflitetest.ModelsDir(t)
	partial := t.TempDir()
	for _, f := range []string{"mobilenet_v2_1.0_224_quant.tflite", "cat.bmp"} {
		if err := os.Symlink(filepath.Join(shared, f), filepath.Join(partial, f)); err != nil {
			t.Fatal(err)
		}
	}
	for name, c := range map[string]struct {
		dir  string
		want []string
	}{
		"missing folder": {filepath.Join(t.TempDir(), "nope"), []string{"nope", "--models"}},
		"partial folder": {partial, []string{"deeplabv3_mnv2_pascal_quant.tflite", "xor_model.tflite", "bird.bmp"}},
	} {
		out := filepath.Join(t.TempDir(), "report")
		start := time.Now()
		code, _, stderr := benchMain(t, "--models", c.dir, "--out", out, "--quick")
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: stderr %q does not name %q", name, stderr, w)
			}
		}
		if code != 2 || time.Since(start) > 5*time.Second {
			t.Errorf("%s: exit %d after %s, want 2 at once", name, code, time.Since(start))
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: the report folder was made: work started", name)
		}
	}
}

// --only names sections: an unknown one, or one combined with --doc (a
// partial run cannot write the whole page), is refused before any work.
func TestBenchOnlyRefusesUnknownSections(t *testing.T) {
	out := filepath.Join(t.TempDir(), "report")
	for _, args := range [][]string{{"--only", "startup,bogus"}, {"--only", "startup", "--doc", filepath.Join(t.TempDir(), "b.md")}} {
		code, _, stderr := benchMain(t, append(args, "--out", out)...)
		if code != 2 || !strings.Contains(stderr, "--only") {
			t.Errorf("%v: exit %d, %q; want 2 naming --only", args, code, stderr)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%v: did work", args)
		}
	}
}
