package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/edge-agent/edge-agent/agent/sdnotify"
)

// The daemon around an agent: signals, systemd readiness and watchdog,
// reloads, bounded shutdown.

// RunOptions are what `run` adds to an agent: files to report to and to
// reload from.
type RunOptions struct {
	ReportPath string // write the startup report here once ready
	// Reload reads the configuration again on SIGHUP; nil means SIGHUP
	// only logs.
	Reload func() (Config, error)
	// LogLevel, when set, is adjusted to the reloaded log_level.
	LogLevel *slog.LevelVar
}

// Run is the daemon: start (telling systemd READY only once the pinned
// models are warm), serve until ctx is cancelled, then stop in bounded time.
// SIGHUP reloads the configuration, SIGUSR1 wakes. With WATCHDOG_USEC set,
// systemd is pinged while the main loops prove they are alive.
func Run(ctx context.Context, cfg Config, log *slog.Logger, o Options, ro RunOptions) error {
	// Before anything else: SIGUSR1 and SIGHUP would otherwise terminate the
	// process; what arrives during start is handled once ready.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(sigs)
	a := New(cfg, log, o)
	interval, _ := daemon.SdWatchdogEnabled(false)
	if interval > 0 {
		a.hb = sdnotify.NewHeartbeats(min(time.Second, interval/4))
	}
	a.hb.Beat("main")
	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	if interval > 0 {
		go sdnotify.Watchdog(wdCtx, interval, a.hb, a.notify)
	}
	if err := a.Start(ctx); err != nil {
		_ = a.shutdown()
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	rep := a.Report()
	log.Info("ready", "models", len(rep.Models), "warm", rep.Pool.WarmModels, "bytes_in_use", rep.Pool.BytesInUse,
		"budget", rep.Pool.Budget, "startup_ms", ms(rep.Timings.Total))
	a.notify.Send(fmt.Sprintf("READY=1\nSTATUS=ready: %d of %d models warm", rep.Pool.WarmModels, len(rep.Models)))
	if ro.ReportPath != "" {
		if err := writeJSONFile(ro.ReportPath, rep); err != nil {
			log.Error("startup report not written", "path", ro.ReportPath, "err", err)
		}
	}
	// Reloads run on their own goroutine: a reload that registers models
	// must never stop this loop, which proves liveness to the watchdog.
	// SIGHUPs that arrive during one coalesce into one more.
	reloads := make(chan struct{}, 1)
	var reloader sync.WaitGroup
	reloader.Add(1)
	go func() {
		defer reloader.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-reloads:
				a.reloadFromSignal(ctx, ro)
			}
		}
	}()
	beat := time.NewTicker(a.hb.Period())
	defer beat.Stop()
	for ctx.Err() == nil {
		select {
		case <-beat.C:
			a.hb.Beat("main")
		case sig := <-sigs:
			a.hb.Beat("main")
			if sig == syscall.SIGUSR1 {
				log.Info("SIGUSR1: wake")
				a.PostWake("signal")
				continue
			}
			select {
			case reloads <- struct{}{}:
			default:
			}
		case <-ctx.Done():
		}
	}
	reloader.Wait()
	log.Info("stopping", "reason", context.Cause(ctx))
	a.notify.Send("STOPPING=1\nSTATUS=stopping")
	stopWatchdog()
	return a.shutdown()
}

// reloadFromSignal handles SIGHUP.
func (a *Agent) reloadFromSignal(ctx context.Context, ro RunOptions) {
	if ro.Reload == nil {
		a.log.Warn("SIGHUP: no configuration file to reload")
		return
	}
	a.notify.Send("RELOADING=1\nSTATUS=reloading")
	defer a.notify.Send("READY=1\nSTATUS=reloaded")
	next, err := ro.Reload()
	if err != nil {
		a.log.Error("SIGHUP: configuration not reloaded; keeping the current one", "err", err)
		return
	}
	res, err := a.Reload(ctx, next)
	if err != nil {
		a.log.Error("SIGHUP: reload failed", "err", err)
		return
	}
	if ro.LogLevel != nil {
		var l slog.Level
		if l.UnmarshalText([]byte(next.LogLevel)) == nil {
			ro.LogLevel.Set(l)
		}
	}
	a.log.Info("reloaded", "added", res.Added, "removed", res.Removed, "changed", res.Changed,
		"unchanged", res.Unchanged, "failed", res.Failed, "needs_restart", res.NeedsRestart)
}

// shutdown closes within ShutdownTimeout; past it, the process exits anyway
// and the state file's own crash safety holds.
func (a *Agent) shutdown() error {
	done := make(chan error, 1)
	go func() { done <- a.Close() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		a.log.Info("stopped")
		return nil
	case <-time.After(a.opts.ShutdownTimeout):
		return fmt.Errorf("stop: not done within %v", a.opts.ShutdownTimeout)
	}
}
