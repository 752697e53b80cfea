package agent

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchModels watches models_dir and the folders of the configured models
// (updates.watch). A model file created, written, renamed over or removed
// is rescanned once every watched model file has kept its size for
// updates.debounce: a copy still being written is not read half-done (and
// if it is, the flatbuffer check rejects it and the write's next event
// brings it back). Folders are watched rather than files, because a
// deployment tool renames a new file over the old one.
func (a *Agent) watchModels(ctx context.Context) {
	cfg := a.config()
	if !cfg.Updates.watch() {
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Warn("model files not watched (rescan or SIGHUP picks up changes)", "err", err)
		return
	}
	defer func() { _ = w.Close() }()
	dirs, files := watchTargets(cfg)
	for _, d := range dirs {
		if err := w.Add(d); err != nil {
			a.log.Warn("folder not watched for model changes", "dir", d, "err", err)
		}
	}
	relevant := func(name string) bool {
		if files[filepath.Clean(name)] {
			return true
		}
		return cfg.ModelsDir != "" && filepath.Dir(name) == filepath.Clean(cfg.ModelsDir) && strings.HasSuffix(name, ".tflite")
	}
	debounce := max(cfg.Updates.Debounce, time.Millisecond)
	var (
		timer    *time.Timer
		fire     <-chan time.Time
		lastSeen map[string]int64
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	arm := func() {
		if timer == nil {
			timer = time.NewTimer(debounce)
		} else {
			timer.Reset(debounce)
		}
		fire = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			a.log.Warn("model watch error; rescanning", "err", err)
			arm()
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if relevant(ev.Name) {
				lastSeen = watchedSizes(cfg, files)
				arm()
			}
		case <-fire:
			fire = nil
			if now := watchedSizes(cfg, files); !maps.Equal(now, lastSeen) {
				lastSeen = now // still being written
				arm()
				continue
			}
			res := a.syncModels()
			if len(res.Added)+len(res.Changed)+len(res.Removed)+len(res.Failed) > 0 {
				a.log.Info("model files changed", "added", res.Added, "changed", res.Changed, "removed", res.Removed, "failed", res.Failed)
			}
			if len(res.Added) > 0 {
				a.PostWake("rescan")
			}
		}
	}
}

// watchTargets are the folders to watch and the configured model files.
func watchTargets(cfg *Config) (dirs []string, files map[string]bool) {
	files = map[string]bool{}
	set := map[string]bool{}
	if cfg.ModelsDir != "" {
		set[filepath.Clean(cfg.ModelsDir)] = true
	}
	for _, m := range cfg.Models {
		for _, p := range []string{m.Path, m.CPUTwin} {
			if p != "" {
				files[filepath.Clean(p)] = true
				set[filepath.Dir(filepath.Clean(p))] = true
			}
		}
	}
	dirs = slices.Sorted(maps.Keys(set))
	return dirs, files
}

// watchedSizes are the sizes of the files a change may concern now.
func watchedSizes(cfg *Config, files map[string]bool) map[string]int64 {
	out := map[string]int64{}
	add := func(p string) {
		if fi, err := os.Stat(p); err == nil {
			out[p] = fi.Size()
		}
	}
	for p := range files {
		add(p)
	}
	if cfg.ModelsDir != "" {
		entries, _ := os.ReadDir(cfg.ModelsDir)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".tflite") {
				add(filepath.Join(cfg.ModelsDir, e.Name()))
			}
		}
	}
	return out
}
