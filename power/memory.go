package power

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Memory is the agent's memory as the kernel counts it: the process (what
// the OOM killer ranks) and its cgroup (what systemd's MemoryMax= limits),
// with the kernel's memory pressure. Absent files leave fields nil or 0:
// no data, not an error.
type Memory struct {
	RSSBytes     int64 `json:"rss_bytes"`      // VmRSS: anonymous + file pages mapped
	PeakRSSBytes int64 `json:"peak_rss_bytes"` // VmHWM
	AnonBytes    int64 `json:"anon_bytes"`     // RssAnon: heaps, arenas, stacks
	PSSBytes     int64 `json:"pss_bytes"`      // smaps_rollup Pss: shared pages divided
	// CgroupCurrent and CgroupMax are memory.current / memory.max (cgroup
	// v2) or memory.usage_in_bytes / memory.limit_in_bytes (v1); CgroupMax
	// is nil when unlimited.
	CgroupCurrent *int64 `json:"cgroup_current_bytes,omitempty"`
	CgroupMax     *int64 `json:"cgroup_max_bytes,omitempty"`
	// CgroupPeak is memory.peak (v2) or memory.max_usage_in_bytes (v1):
	// the most the cgroup held since it was made.
	CgroupPeak *int64 `json:"cgroup_peak_bytes,omitempty"`
	// CgroupOOMKills counts from memory.events (v2) or memory.oom_control
	// (v1); CgroupHighEvents from memory.events (v2).
	CgroupOOMKills   int64 `json:"cgroup_oom_kills"`
	CgroupHighEvents int64 `json:"cgroup_high_events"`
	// PressureSome10 is the share of the last 10 s (percent) in which some
	// task stalled on memory: the cgroup's own memory.pressure (v2), else
	// the machine's /proc/pressure/memory; nil without PSI.
	PressureSome10 *float64 `json:"pressure_some_avg10,omitempty"`
	// MemAvailable is the machine's (from /proc/meminfo).
	MemAvailable int64 `json:"mem_available_bytes"`
}

// ReadMemory reads the calling process's memory under root ("/" on a
// device; a fixture tree in tests): proc/self/{status,smaps_rollup,cgroup},
// proc/meminfo, proc/pressure/memory and sys/fs/cgroup.
func ReadMemory(root string) Memory {
	m := readProcess(root)
	m.PSSBytes = kb(keyValues(filepath.Join(root, "proc/self/smaps_rollup"))["Pss"])
	m.readCgroup(root, true)
	if m.PressureSome10 == nil {
		m.PressureSome10 = someAvg10(filepath.Join(root, "proc/pressure/memory"))
	}
	return m
}

// ReadLimit reads what a plan of the memory needs (Limit and RSSBytes):
// proc/self/status, proc/meminfo and the cgroup's usage and limit. It
// leaves out smaps_rollup, whose read walks the page tables of every
// mapping (1.3 ms on a first start's path, in a process with models
// mapped), and the cgroup's counters and pressure.
func ReadLimit(root string) Memory {
	m := readProcess(root)
	m.readCgroup(root, false)
	return m
}

// readProcess reads proc/self/status and proc/meminfo.
func readProcess(root string) Memory {
	var m Memory
	status := keyValues(filepath.Join(root, "proc/self/status"))
	m.RSSBytes, m.PeakRSSBytes, m.AnonBytes = kb(status["VmRSS"]), kb(status["VmHWM"]), kb(status["RssAnon"])
	m.MemAvailable = kb(keyValues(filepath.Join(root, "proc/meminfo"))["MemAvailable"])
	return m
}

// someAvg10 reads the "some avg10=" figure of a PSI file.
func someAvg10(path string) *float64 {
	s, ok := readAttr(path)
	if !ok {
		return nil
	}
	for _, line := range strings.Split(s, "\n") {
		rest, ok := strings.CutPrefix(line, "some ")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if v, ok := strings.CutPrefix(f, "avg10="); ok {
				if p, err := strconv.ParseFloat(v, 64); err == nil {
					return &p
				}
			}
		}
	}
	return nil
}

// readCgroup finds the process's memory cgroup in proc/self/cgroup: the
// unified hierarchy ("0::/path") or v1's memory controller. Without full
// it reads the usage and the limit only.
func (m *Memory) readCgroup(root string, full bool) {
	s, ok := readAttr(filepath.Join(root, "proc/self/cgroup"))
	if !ok {
		return
	}
	for _, line := range strings.Split(s, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			dir := filepath.Join(root, "sys/fs/cgroup", parts[2])
			m.CgroupCurrent = readInt(filepath.Join(dir, "memory.current"))
			m.CgroupMax = readInt(filepath.Join(dir, "memory.max")) // "max" does not parse: unlimited
			if !full {
				if m.CgroupCurrent != nil {
					return
				}
				continue
			}
			ev := keyValues(filepath.Join(dir, "memory.events"))
			m.CgroupOOMKills, _ = strconv.ParseInt(ev["oom_kill"], 10, 64)
			m.CgroupHighEvents, _ = strconv.ParseInt(ev["high"], 10, 64)
			m.CgroupPeak = readInt(filepath.Join(dir, "memory.peak"))
			if m.CgroupCurrent != nil {
				m.PressureSome10 = someAvg10(filepath.Join(dir, "memory.pressure"))
				return
			}
		case strings.Contains(","+parts[1]+",", ",memory,"):
			dir := filepath.Join(root, "sys/fs/cgroup/memory", parts[2])
			m.CgroupCurrent = readInt(filepath.Join(dir, "memory.usage_in_bytes"))
			// v1 says "unlimited" with a huge page-aligned number.
			if max := readInt(filepath.Join(dir, "memory.limit_in_bytes")); max != nil && *max < 1<<62 {
				m.CgroupMax = max
			}
			if !full {
				return
			}
			m.CgroupPeak = readInt(filepath.Join(dir, "memory.max_usage_in_bytes"))
			m.CgroupOOMKills, _ = strconv.ParseInt(keyValues(filepath.Join(dir, "memory.oom_control"))["oom_kill"], 10, 64)
			return
		}
	}
}

// Limit is what the process may use: the cgroup's limit, else what the
// machine has available plus what the process already holds.
func (m Memory) Limit() int64 {
	if m.CgroupMax != nil {
		return *m.CgroupMax
	}
	return m.MemAvailable + m.RSSBytes
}

// keyValues reads "Key: value" (or "key value") lines, one bounded file.
func keyValues(path string) map[string]string {
	out := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 0; sc.Scan() && n < 512; n++ {
		line := sc.Text()
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			k, v, ok = strings.Cut(line, " ")
		}
		if ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// kb parses "1234 kB" into bytes; anything else is 0.
func kb(s string) int64 {
	v, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(s, "kB")), 10, 64)
	if err != nil {
		return 0
	}
	return v << 10
}
