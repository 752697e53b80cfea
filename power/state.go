package power

import (
	"math"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v3/load"
	"github.com/shirou/gopsutil/v3/mem"
)

// Supply is one /sys/class/power_supply entry, values in SI units.
type Supply struct {
	Name     string   `json:"name"`
	Type     string   `json:"type"` // Mains, USB, Battery, UPS, ...
	Online   *bool    `json:"online,omitempty"`
	Status   string   `json:"status,omitempty"`   // Charging, Discharging, Full, Not charging
	Capacity *int     `json:"capacity,omitempty"` // percent
	EnergyWh *float64 `json:"energy_wh,omitempty"`
	PowerW   *float64 `json:"power_w,omitempty"`
}

// Zone is one thermal zone.
type Zone struct {
	Name  string   `json:"name"`
	Type  string   `json:"type"`
	TempC float64  `json:"temp_c"`
	TripC *float64 `json:"trip_c,omitempty"` // the lowest passive or critical trip point
}

// State is what the device can afford, read at At.
type State struct {
	At       time.Time `json:"at"`
	OnAC     bool      `json:"on_ac"`    // external power, or no battery at all
	Battery  *Supply   `json:"battery"`  // the main battery, if any
	Supplies []Supply  `json:"supplies"` // everything under power_supply
	Thermal  []Zone    `json:"thermal"`  // every zone
	MaxTempC *float64  `json:"max_temp_c"`
	// HeadroomC is the smallest distance to a trip point, nil without trips.
	HeadroomC   *float64 `json:"headroom_c"`
	Load1       float64  `json:"load1"`
	Cores       int      `json:"cores"`
	MemAvailMiB uint64   `json:"mem_available_mib"`
}

// LoadPerCore is the 1-minute load average per core.
func (s State) LoadPerCore() float64 {
	if s.Cores <= 0 {
		return s.Load1
	}
	return s.Load1 / float64(s.Cores)
}

// System is CPU load and memory; gopsutil on a real machine.
type System struct {
	Load1       float64
	Cores       int
	MemAvailMiB uint64
}

// Options configure a Reader.
type Options struct {
	// Root is where sys/ is read from; "" means "/".
	Root string
	// System reads load and memory; nil means gopsutil.
	System func() System
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Reader reads the power state.
type Reader struct{ o Options }

// NewReader returns a Reader.
func NewReader(o Options) *Reader {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.System == nil {
		o.System = gopsutilSystem
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Reader{o: o}
}

func gopsutilSystem() System {
	s := System{Cores: runtime.NumCPU()}
	if a, err := load.Avg(); err == nil {
		s.Load1 = a.Load1
	}
	if v, err := mem.VirtualMemory(); err == nil {
		s.MemAvailMiB = v.Available >> 20
	}
	return s
}

// Read takes the current state. It never fails: what cannot be read is
// absent.
func (r *Reader) Read() State {
	st := State{At: r.o.Now(), Supplies: []Supply{}, Thermal: []Zone{}}
	sys := r.o.System()
	st.Load1, st.Cores, st.MemAvailMiB = sys.Load1, sys.Cores, sys.MemAvailMiB

	base := filepath.Join(r.o.Root, "sys/class/power_supply")
	external := false
	for _, name := range dirEntries(base) {
		s := readSupply(filepath.Join(base, name), name)
		st.Supplies = append(st.Supplies, s)
		switch {
		case s.Type == "Battery" && st.Battery == nil:
			b := s
			st.Battery = &b
		case s.Type != "Battery" && s.Online != nil && *s.Online:
			external = true
		}
	}
	// No battery means the board runs from its supply; a battery that says
	// it is charging or full is on external power too.
	st.OnAC = external || st.Battery == nil ||
		st.Battery.Status == "Charging" || st.Battery.Status == "Full"

	tbase := filepath.Join(r.o.Root, "sys/class/thermal")
	for _, name := range dirEntries(tbase) {
		if !strings.HasPrefix(name, "thermal_zone") {
			continue
		}
		z, ok := readZone(filepath.Join(tbase, name), name)
		if !ok {
			continue
		}
		st.Thermal = append(st.Thermal, z)
		if st.MaxTempC == nil || z.TempC > *st.MaxTempC {
			t := z.TempC
			st.MaxTempC = &t
		}
		if z.TripC != nil {
			h := *z.TripC - z.TempC
			if st.HeadroomC == nil || h < *st.HeadroomC {
				st.HeadroomC = &h
			}
		}
	}
	return st
}

func readSupply(dir, name string) Supply {
	s := Supply{Name: name}
	s.Type, _ = readAttr(filepath.Join(dir, "type"))
	s.Status, _ = readAttr(filepath.Join(dir, "status"))
	if v := readInt(filepath.Join(dir, "online")); v != nil {
		on := *v != 0
		s.Online = &on
	}
	if v := readInt(filepath.Join(dir, "capacity")); v != nil {
		c := int(*v)
		s.Capacity = &c
	}
	voltage := readInt(filepath.Join(dir, "voltage_now"))         // µV
	if e := readInt(filepath.Join(dir, "energy_now")); e != nil { // µWh
		wh := float64(*e) / 1e6
		s.EnergyWh = &wh
	} else if c := readInt(filepath.Join(dir, "charge_now")); c != nil && voltage != nil { // µAh × µV
		wh := float64(*c) / 1e6 * float64(*voltage) / 1e6
		s.EnergyWh = &wh
	}
	if p := readInt(filepath.Join(dir, "power_now")); p != nil { // µW
		w := float64(*p) / 1e6
		s.PowerW = &w
	} else if i := readInt(filepath.Join(dir, "current_now")); i != nil && voltage != nil { // µA × µV
		w := math.Abs(float64(*i)) / 1e6 * float64(*voltage) / 1e6
		s.PowerW = &w
	}
	return s
}

func readZone(dir, name string) (Zone, bool) {
	t := readInt(filepath.Join(dir, "temp")) // millidegree °C
	if t == nil {
		return Zone{}, false
	}
	z := Zone{Name: name, TempC: float64(*t) / 1000}
	z.Type, _ = readAttr(filepath.Join(dir, "type"))
	for i := 0; i < 16; i++ {
		typ, ok := readAttr(filepath.Join(dir, "trip_point_"+strconv.Itoa(i)+"_type"))
		if !ok {
			break
		}
		if typ != "passive" && typ != "critical" && typ != "hot" {
			continue
		}
		if v := readInt(filepath.Join(dir, "trip_point_"+strconv.Itoa(i)+"_temp")); v != nil {
			c := float64(*v) / 1000
			if z.TripC == nil || c < *z.TripC {
				z.TripC = &c
			}
		}
	}
	return z, true
}
