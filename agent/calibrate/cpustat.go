package calibrate

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// processCPU is the process's CPU time so far (user + system): the
// calibrator's loads run alone (requests preempt it between them), so its
// deltas around them are what measuring cost.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runDelay is how long the process's threads (the runtime's workers
// included) have waited for a CPU, summed: the second field of each
// /proc/self/task/*/schedstat. Its growth over a measurement says the
// cores were busy with something else, so the times measured are not the
// board's. 0 where the kernel does not keep it.
func runDelay() time.Duration {
	tasks, _ := filepath.Glob("/proc/self/task/*/schedstat")
	var sum time.Duration
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended meanwhile
		}
		f := bytes.Fields(b)
		if len(f) < 2 {
			continue
		}
		if ns, err := strconv.ParseInt(string(f[1]), 10, 64); err == nil {
			sum += time.Duration(ns)
		}
	}
	return sum
}
