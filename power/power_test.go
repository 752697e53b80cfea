package power_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/power"
)

func idle() power.System { return power.System{Load1: 0.2, Cores: 4, MemAvailMiB: 1500} }

func read(fixture string, sys func() power.System) power.State {
	return power.NewReader(power.Options{Root: filepath.Join("testdata", fixture), System: sys}).Read()
}

func TestFixtureStates(t *testing.T) {
	laptop := read("laptop-battery", idle)
	if laptop.OnAC || laptop.Battery == nil || *laptop.Battery.Capacity != 64 || laptop.Battery.Status != "Discharging" {
		t.Fatalf("laptop on battery: %+v", laptop)
	}
	if got := *laptop.Battery.EnergyWh; got != 32 { // 32000000 µWh
		t.Errorf("energy %v Wh", got)
	}
	if got := *laptop.Battery.PowerW; got != 9.5 {
		t.Errorf("power %v W", got)
	}
	if len(laptop.Thermal) != 2 || *laptop.MaxTempC != 52 || *laptop.HeadroomC != 43 {
		t.Errorf("thermal %+v max %v headroom %v", laptop.Thermal, *laptop.MaxTempC, *laptop.HeadroomC)
	}
	if ac := read("laptop-ac", idle); !ac.OnAC {
		t.Error("laptop on AC not on AC")
	}
	pi := read("rpi", idle)
	if !pi.OnAC || pi.Battery != nil || len(pi.Thermal) != 1 || pi.Thermal[0].TempC != 48.312 || *pi.Thermal[0].TripC != 110 {
		t.Errorf("pi: %+v", pi)
	}
	ups := read("ups-hat", idle)
	// charge_now 1.26 Ah × 3.7 V = 4.662 Wh; current 0.85 A × 3.7 V = 3.145 W
	if ups.OnAC || ups.Battery == nil || *ups.Battery.Capacity != 42 ||
		*ups.Battery.EnergyWh < 4.661 || *ups.Battery.EnergyWh > 4.663 || *ups.Battery.PowerW < 3.144 || *ups.Battery.PowerW > 3.146 {
		t.Errorf("ups hat: %+v battery %+v", ups, ups.Battery)
	}
	hot := read("hot", idle)
	if hot.HeadroomC == nil || *hot.HeadroomC != 1.5 {
		t.Errorf("hot headroom %v", hot.HeadroomC)
	}
	if none := read("no-such-fixture", idle); !none.OnAC || len(none.Thermal) != 0 {
		t.Errorf("missing tree is no data: %+v", none)
	}
}

// The documented policy table, per fixture.
func TestPolicyTable(t *testing.T) {
	busy := func() power.System { return power.System{Load1: 3.9, Cores: 4} }
	cases := []struct {
		fixture string
		sys     func() power.System
		mode    power.Mode
		topK    int
	}{
		{"laptop-ac", idle, power.ModeAll, 0},
		{"rpi", idle, power.ModeAll, 0},
		{"laptop-battery", idle, power.ModeTopK, 2},
		{"ups-hat", idle, power.ModeTopK, 2},
		{"laptop-low", idle, power.ModePinned, 0},
		{"laptop-critical", idle, power.ModeNone, 0},
		{"hot", idle, power.ModeDefer, 0},
		{"laptop-ac", busy, power.ModeDefer, 0},
	}
	for _, c := range cases {
		a := power.Policy{}.Allow(read(c.fixture, c.sys), nil)
		if a.Mode != c.mode || a.TopK != c.topK || a.Reason == "" {
			t.Errorf("%s: %+v, want %s top_k=%d", c.fixture, a, c.mode, c.topK)
		}
		if c.mode == power.ModeDefer && a.RetryIn <= 0 {
			t.Errorf("%s: defer without retry", c.fixture)
		}
	}
	// Stagger is drawn in [0, MaxStagger).
	a := power.Policy{MaxStagger: 10 * time.Second}.Allow(read("rpi", idle), func() float64 { return 0.5 })
	if a.Stagger != 5*time.Second {
		t.Errorf("stagger %v", a.Stagger)
	}
}

type fakeClock struct {
	mu         sync.Mutex
	boot, mono time.Duration
}

func (c *fakeClock) advance(awake, asleep time.Duration) {
	c.mu.Lock()
	c.mono += awake
	c.boot += awake + asleep
	c.mu.Unlock()
}
func (c *fakeClock) Boottime() time.Duration  { c.mu.Lock(); defer c.mu.Unlock(); return c.boot }
func (c *fakeClock) Monotonic() time.Duration { c.mu.Lock(); defer c.mu.Unlock(); return c.mono }

func TestResumeDetectedOnce(t *testing.T) {
	c := &fakeClock{boot: time.Hour, mono: time.Hour - time.Minute}
	d := power.NewResumeDetector(c, 0)
	c.advance(time.Second, 0)
	if _, ok := d.Check(); ok {
		t.Fatal("resume without suspend")
	}
	c.advance(time.Second, 10*time.Minute)
	if slept, ok := d.Check(); !ok || slept != 10*time.Minute {
		t.Fatalf("resume: %v %v", slept, ok)
	}
	c.advance(time.Second, 500*time.Millisecond) // jitter below threshold
	if _, ok := d.Check(); ok {
		t.Fatal("second event for one resume")
	}

}

func TestSystemClockGap(t *testing.T) {
	c := power.SystemClock{}
	mono := c.Monotonic() // first: boottime read later can only be larger
	if boot := c.Boottime(); boot < mono || mono <= 0 {
		t.Fatalf("boottime %v monotonic %v", boot, mono)
	}
}

func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestEnergyMeter(t *testing.T) {
	root := copyTree(t, filepath.Join("testdata", "laptop-battery"))
	energy := filepath.Join(root, "sys/class/powercap/intel-rapl:0/energy_uj")
	m := power.Meter{Root: root, WattsPerCPUSecond: 2}
	s := m.Start()
	busy := time.Now()
	for time.Since(busy) < 30*time.Millisecond { // some CPU time
	}
	os.WriteFile(energy, []byte("125456789\n"), 0o644) // +2 J
	e := m.Since(s)
	if e.MeasuredBy != "rapl" || *e.JoulesMeasured != 2 || e.CPUSeconds <= 0 || e.JoulesEstimated != e.CPUSeconds*2 {
		t.Fatalf("energy %+v", e)
	}
	// Wraparound: from near the top of the range to a small value.
	os.WriteFile(energy, []byte("262143328000\n"), 0o644)
	s = m.Start()
	os.WriteFile(energy, []byte("1150\n"), 0o644)
	if e := m.Since(s); *e.JoulesMeasured != 0.002 {
		t.Fatalf("wrapped: %v", *e.JoulesMeasured)
	}
	// Without RAPL, the battery counter measures (coarsely).
	os.RemoveAll(filepath.Join(root, "sys/class/powercap"))
	s = m.Start()
	os.WriteFile(filepath.Join(root, "sys/class/power_supply/BAT0/energy_now"), []byte("31990000\n"), 0o644) // -10 mWh
	if e := m.Since(s); e.MeasuredBy != "battery" || *e.JoulesMeasured < 35.99 || *e.JoulesMeasured > 36.01 {
		t.Fatalf("battery: %+v", e)
	}
}

func TestReadMemoryFixtures(t *testing.T) {
	v2 := power.ReadMemory(filepath.Join("testdata", "mem-v2"))
	if v2.RSSBytes != 80312<<10 || v2.PeakRSSBytes != 91244<<10 || v2.AnonBytes != 57344<<10 || v2.PSSBytes != 71020<<10 {
		t.Fatalf("process: %+v", v2)
	}
	if v2.CgroupCurrent == nil || *v2.CgroupCurrent != 486539264 || v2.CgroupMax == nil || *v2.CgroupMax != 512<<20 ||
		v2.CgroupOOMKills != 1 || v2.CgroupHighEvents != 17 || v2.CgroupPeak == nil || *v2.CgroupPeak != 480<<20 {
		t.Fatalf("cgroup v2: %+v", v2)
	}
	// The cgroup's own memory.pressure, not the machine's (12.5).
	if v2.PressureSome10 == nil || *v2.PressureSome10 != 31.25 || v2.MemAvailable != 2412108<<10 || v2.Limit() != 512<<20 {
		t.Fatalf("pressure/available: %+v", v2)
	}
	v1 := power.ReadMemory(filepath.Join("testdata", "mem-v1"))
	if v1.CgroupCurrent == nil || *v1.CgroupCurrent != 100<<20 || v1.CgroupMax != nil ||
		v1.CgroupPeak == nil || *v1.CgroupPeak != 200<<20 || v1.CgroupOOMKills != 2 {
		t.Fatalf("cgroup v1 (unlimited): %+v", v1)
	}
	none := power.ReadMemory(filepath.Join("testdata", "mem-none"))
	if none.CgroupCurrent != nil || none.PressureSome10 != nil || none.Limit() != 500000<<10+80312<<10 {
		t.Fatalf("no cgroup: %+v limit %d", none, none.Limit())
	}
	if empty := power.ReadMemory(t.TempDir()); empty.RSSBytes != 0 || empty.CgroupMax != nil {
		t.Fatalf("missing /proc: %+v", empty)
	}
	if self := power.ReadMemory("/"); self.RSSBytes <= 0 || self.PeakRSSBytes < self.RSSBytes {
		t.Fatalf("this process: %+v", self)
	}
}

// A plan's read gives the same limit and RSS as the full read, from the
// same files, without the counters only telemetry uses.
func TestReadLimitMatchesReadMemory(t *testing.T) {
	for _, dir := range []string{"mem-v2", "mem-v1", "mem-none"} {
		root := filepath.Join("testdata", dir)
		full, plan := power.ReadMemory(root), power.ReadLimit(root)
		if plan.Limit() != full.Limit() || plan.RSSBytes != full.RSSBytes || plan.MemAvailable != full.MemAvailable {
			t.Fatalf("%s: plan %+v, full %+v", dir, plan, full)
		}
		if plan.PSSBytes != 0 || plan.CgroupPeak != nil || plan.CgroupOOMKills != 0 || plan.PressureSome10 != nil {
			t.Fatalf("%s: read more than a plan needs: %+v", dir, plan)
		}
	}
	if v2 := power.ReadLimit(filepath.Join("testdata", "mem-v2")); v2.CgroupMax == nil || *v2.CgroupMax != 512<<20 {
		t.Fatalf("cgroup v2 limit: %+v", v2)
	}
}
