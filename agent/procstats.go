package agent

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// processStats reads the process's resident set (/proc/self/statm) and
// CPU time (getrusage): one small read and one system call, as the start
// takes them on its path (a general process library read five /proc
// files there, 0.3–1 ms at a start). Zero fields when unreadable.
func processStats() ProcessStats {
	var ps ProcessStats
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		// size resident shared text lib data dt, in pages
		if f := bytes.Fields(b); len(f) > 1 {
			if pages, err := strconv.ParseUint(string(f[1]), 10, 64); err == nil {
				ps.RSSBytes = pages * uint64(os.Getpagesize())
			}
		}
	}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		ps.CPUSeconds = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
	}
	return ps
}

func tvSeconds(tv unix.Timeval) float64 {
	return float64(tv.Sec) + float64(tv.Usec)/1e6
}
