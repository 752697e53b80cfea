// Package sdnotify is the agent's side of systemd: the notify protocol
// (READY, STATUS, STOPPING, RELOADING) and a watchdog that pings only while
// every main loop proves it is alive.
package sdnotify

import (
	"context"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier speaks systemd's notify protocol when NOTIFY_SOCKET is set (a
// Type=notify unit) and is silent otherwise.
type Notifier struct{ Log *slog.Logger }

// Send sends state, e.g. "READY=1\nSTATUS=ready".
func (n Notifier) Send(state string) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.Log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// Heartbeats records when each main loop last proved it is alive. The
// Watchdog pings systemd only while every loop is fresh, so a stalled loop
// gets the service restarted instead of pinged forever by a healthy timer.
type Heartbeats struct {
	period time.Duration // how often loops beat
	// mu guards last.
	mu   sync.Mutex
	last map[string]time.Time
}

// NewHeartbeats expects loops to beat every period.
func NewHeartbeats(period time.Duration) *Heartbeats {
	return &Heartbeats{period: period, last: map[string]time.Time{}}
}

// Period is how often loops beat.
func (h *Heartbeats) Period() time.Duration { return h.period }

// Beat records that loop is alive now.
func (h *Heartbeats) Beat(loop string) {
	h.mu.Lock()
	h.last[loop] = time.Now()
	h.mu.Unlock()
}

// stale lists the loops that have not beaten within maxAge.
func (h *Heartbeats) stale(maxAge time.Duration) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for loop, t := range h.last {
		if time.Since(t) > maxAge {
			out = append(out, loop)
		}
	}
	sort.Strings(out)
	return out
}

// Watchdog pings every interval/2 while no loop is stale (older than
// interval/2), until ctx ends.
func Watchdog(ctx context.Context, interval time.Duration, hb *Heartbeats, n Notifier) {
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if stalled := hb.stale(interval / 2); len(stalled) > 0 {
				n.Log.Error("watchdog: main loop stalled; not pinging systemd", "loops", stalled)
				continue
			}
			n.Send("WATCHDOG=1")
		}
	}
}
