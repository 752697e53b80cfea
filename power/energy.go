package power

import (
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Meter accounts the energy of a piece of work: the process's CPU time, an
// estimate in joules from a per-board coefficient, and a measurement where
// the machine offers one (RAPL package counters, else the battery's energy
// counter).
type Meter struct {
	Root string // where sys/ is read; "" means "/"
	// WattsPerCPUSecond is the board's extra power per busy core, for the
	// estimate. Default 2.5 W (a Raspberry Pi 4 core under load, roughly).
	WattsPerCPUSecond float64
}

// Sample is the counters at one moment.
type Sample struct {
	cpu       time.Duration
	raplUJ    uint64
	raplRange uint64
	rapl      bool
	batteryWh *float64
}

// Energy is what a piece of work cost.
type Energy struct {
	CPUSeconds      float64  `json:"cpu_seconds"`
	JoulesEstimated float64  `json:"joules_estimated"`
	JoulesMeasured  *float64 `json:"joules_measured,omitempty"`
	MeasuredBy      string   `json:"measured_by,omitempty"` // rapl, battery
}

func (m Meter) root() string {
	if m.Root == "" {
		return "/"
	}
	return m.Root
}

// ProcessCPU is the process's user+system CPU time so far.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Start samples the counters.
func (m Meter) Start() Sample {
	s := Sample{cpu: ProcessCPU()}
	s.raplUJ, s.raplRange, s.rapl = m.rapl()
	if b := NewReader(Options{Root: m.root(), System: func() System { return System{} }}).Read().Battery; b != nil && b.Status == "Discharging" {
		s.batteryWh = b.EnergyWh
	}
	return s
}

// Since is the energy spent since s.
func (m Meter) Since(s Sample) Energy {
	w := m.WattsPerCPUSecond
	if w <= 0 {
		w = 2.5
	}
	e := Energy{CPUSeconds: (ProcessCPU() - s.cpu).Seconds()}
	e.JoulesEstimated = e.CPUSeconds * w
	if uj, _, ok := m.rapl(); ok && s.rapl {
		d := uj - s.raplUJ
		if uj < s.raplUJ { // the counter wrapped
			d = s.raplRange - s.raplUJ + uj
		}
		j := float64(d) / 1e6
		e.JoulesMeasured, e.MeasuredBy = &j, "rapl"
		return e
	}
	if s.batteryWh != nil {
		if b := NewReader(Options{Root: m.root(), System: func() System { return System{} }}).Read().Battery; b != nil && b.EnergyWh != nil && *b.EnergyWh <= *s.batteryWh {
			j := (*s.batteryWh - *b.EnergyWh) * 3600
			e.JoulesMeasured, e.MeasuredBy = &j, "battery"
		}
	}
	return e
}

// rapl sums the top-level package domains of /sys/class/powercap.
func (m Meter) rapl() (uj, rng uint64, ok bool) {
	base := filepath.Join(m.root(), "sys/class/powercap")
	for _, name := range dirEntries(base) {
		// intel-rapl:0 is a package; intel-rapl:0:0 its sub-domain.
		if !strings.HasPrefix(name, "intel-rapl:") || strings.Count(name, ":") != 1 {
			continue
		}
		v := readInt(filepath.Join(base, name, "energy_uj"))
		if v == nil {
			continue
		}
		uj += uint64(*v)
		if r := readInt(filepath.Join(base, name, "max_energy_range_uj")); r != nil {
			rng += uint64(*r)
		}
		ok = true
	}
	return uj, rng, ok
}
