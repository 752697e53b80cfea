package power

import (
	"time"

	"golang.org/x/sys/unix"
)

// Clock reads the two kernel clocks whose difference grows only while the
// system is suspended: CLOCK_BOOTTIME counts suspend, CLOCK_MONOTONIC not.
type Clock interface {
	Boottime() time.Duration
	Monotonic() time.Duration
}

// SystemClock is the kernel's clocks.
type SystemClock struct{}

func clockRead(id int32) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func (SystemClock) Boottime() time.Duration  { return clockRead(unix.CLOCK_BOOTTIME) }
func (SystemClock) Monotonic() time.Duration { return clockRead(unix.CLOCK_MONOTONIC) }

// Wake is a reason to prewarm now.
type Wake struct {
	Source string        `json:"source"` // start, resume, signal, command, schedule
	At     time.Time     `json:"at"`
	Slept  time.Duration `json:"slept_ns,omitempty"` // for resume: how long the system was suspended
}

// ResumeDetector notices a resume from suspend: the boot-time minus
// monotonic gap grew since the last check.
type ResumeDetector struct {
	clock     Clock
	threshold time.Duration
	gap       time.Duration
}

// NewResumeDetector starts from the current gap. A growth smaller than
// threshold (default 2s) is clock noise, not a suspend.
func NewResumeDetector(c Clock, threshold time.Duration) *ResumeDetector {
	if c == nil {
		c = SystemClock{}
	}
	if threshold <= 0 {
		threshold = 2 * time.Second
	}
	return &ResumeDetector{clock: c, threshold: threshold, gap: c.Boottime() - c.Monotonic()}
}

// Check reports a resume since the last check, with how long was slept.
func (d *ResumeDetector) Check() (time.Duration, bool) {
	gap := d.clock.Boottime() - d.clock.Monotonic()
	slept := gap - d.gap
	d.gap = gap
	return slept, slept >= d.threshold
}
