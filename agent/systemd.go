package agent

import (
	"context"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks systemd's notify protocol when NOTIFY_SOCKET is set (a
// Type=notify unit) and is silent otherwise.
type notifier struct{ log *slog.Logger }

func (n notifier) send(state string) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// heartbeats records when each main loop last proved it is alive. The
// watchdog pings systemd only while every loop is fresh, so a stalled loop
// gets the service restarted instead of pinged forever by a healthy timer.
type heartbeats struct {
	period time.Duration // how often loops beat
	// mu guards last.
	mu   sync.Mutex
	last map[string]time.Time
}

func newHeartbeats(period time.Duration) *heartbeats {
	return &heartbeats{period: period, last: map[string]time.Time{}}
}

func (h *heartbeats) beat(loop string) {
	h.mu.Lock()
	h.last[loop] = time.Now()
	h.mu.Unlock()
}

// stale lists the loops that have not beaten within maxAge.
func (h *heartbeats) stale(maxAge time.Duration) []string {
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

// watchdog pings every interval/2 while no loop is stale (older than
// interval/2), until ctx ends.
func watchdog(ctx context.Context, interval time.Duration, hb *heartbeats, n notifier) {
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if stalled := hb.stale(interval / 2); len(stalled) > 0 {
				n.log.Error("watchdog: main loop stalled; not pinging systemd", "loops", stalled)
				continue
			}
			n.send("WATCHDOG=1")
		}
	}
}
