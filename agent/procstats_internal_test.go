package agent

import (
	"crypto/sha256"
	"math"
	"os"
	"testing"

	"github.com/shirou/gopsutil/v3/process"
)

// processStats reads what a general process library reads from /proc: the
// resident set and the CPU time of the whole process.
func TestProcessStatsMatchProc(t *testing.T) {
	// Some CPU time and some resident memory to read.
	buf := make([]byte, 32<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for range 20 {
		_ = sha256.Sum256(buf)
	}
	got := processStats()
	p, err := process.NewProcess(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	mi, err := p.MemoryInfo()
	if err != nil {
		t.Fatal(err)
	}
	times, err := p.Times()
	if err != nil {
		t.Fatal(err)
	}
	if got.RSSBytes < 32<<20 || math.Abs(float64(got.RSSBytes)-float64(mi.RSS)) > 0.2*float64(mi.RSS) {
		t.Fatalf("rss %d, /proc says %d", got.RSSBytes, mi.RSS)
	}
	want := times.User + times.System
	if got.CPUSeconds <= 0 || math.Abs(got.CPUSeconds-want) > 0.1 {
		t.Fatalf("cpu %.3f s, /proc says %.3f s", got.CPUSeconds, want)
	}
	_ = buf[len(buf)-1]
}
