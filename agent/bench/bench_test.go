package bench_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-agent/edge-agent/agent/bench"
	"github.com/edge-agent/edge-agent/tflite/tflitetest"
)

// The report is produced end to end (in its quick form) with every section
// and chart; the full run is `make bench`.
func TestQuickBenchWritesReport(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP in -short: runs the quick benchmark")
	}
	out := t.TempDir()
	r, err := bench.Run(context.Background(), bench.Options{Out: out, Models: tflitetest.ModelsDir(t), Quick: true, SDRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	report, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Summary", "## Startup", "agent prewarmed", "## Serving", "## Memory under a budget", "histogram", "lru", "## Eviction policies on traces", "Simulator check", "pairs in step", "## Scaling", "## Energy",
		// Rows that cannot be measured say why, never vanish: the SD card is
		// off here (TestSDCardThrottlesReads makes one), and the process rows
		// need the edge-agent-bench binary, not this test binary.
		"## On an SD card", "Not measured: turned off", "## As separate processes over MQTT", "Not measured: the naive process is edge-agent-bench itself"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, svg := range []string{"startup.svg", "latency-cdf.svg", "scaling.svg", "policies-1.svg", "policies-2.svg"} {
		b, err := os.ReadFile(filepath.Join(out, svg))
		if err != nil || !strings.HasPrefix(string(b), "<svg") || !strings.Contains(string(b), "</svg>") {
			t.Errorf("%s: %v", svg, err)
		}
	}
	for _, p := range r.Memory.Policies {
		if p.MaxAccounted > r.Memory.Budget {
			t.Errorf("accounted %d over budget %d", p.MaxAccounted, r.Memory.Budget)
		}
	}
	if r.Startup.FirstRequest[bench.Prewarmed].Median <= 0 || r.Serving.Requests == 0 || len(r.Scaling.Points) == 0 {
		t.Fatalf("empty sections: %+v", r)
	}
}
