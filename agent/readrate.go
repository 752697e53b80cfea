package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// The storage's cold read rate makes a model's cold cost true on a board:
// an evicted model whose pages the kernel dropped is read again from an
// SD card at tens of MB/s. It is measured once per storage device (a cold
// read of a model file that nothing maps) and kept in the state file.

// maxReadRateProbe bounds what the measurement reads.
const maxReadRateProbe = 64 << 20

// deviceOf names the storage device a file is on ("major:minor").
func deviceOf(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("%s: no device number", path)
	}
	dev := uint64(st.Dev) // uint32 on some GOARCHes
	return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)), nil
}

// restoreReadRate gives the pool the read rate stored for the models'
// device, if any; it reports the device and whether one was found.
// Before any model is registered (the start registers them after it
// accepts requests) the device is the kept versions' (state dir) or the
// configured files'.
func (c *pageCache) restoreReadRate(configured ...string) (string, bool) {
	var paths []string
	if ms := c.pool().Models(); len(ms) > 0 {
		paths = []string{ms[0].Path}
	} else {
		paths = append([]string{c.config().StateDir}, configured...)
	}
	first := ""
	for _, p := range paths {
		dev, err := deviceOf(p)
		if err != nil {
			continue
		}
		if r, ok := c.store().ReadRate(dev); ok {
			c.pool().SetReadRate(r.BytesPerSec)
			return dev, true
		}
		if first == "" {
			first = dev
		}
	}
	return first, false
}

// measureReadRate measures and stores the read rate of the models'
// device unless the start restored it: it reads the largest model file
// (up to 64 MiB) that is not mapped, once, after the start has settled.
func (c *pageCache) measureReadRate(ctx context.Context) {
	dev := c.device
	if dev == "" || c.pool().Stats().ReadRate > 0 {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-c.settled():
	}
	ms := c.pool().Models()
	slices.SortFunc(ms, func(x, y tflite.ModelStatus) int { return int(fileSize(y.Path) - fileSize(x.Path)) })
	for _, m := range ms {
		size := fileSize(m.Path)
		if m.Mapped || size <= 0 || size > maxReadRateProbe {
			continue
		}
		if d, err := deviceOf(m.Path); err != nil || d != dev {
			continue
		}
		rate, err := tflite.MeasureReadRate(m.Path)
		if errors.Is(err, tflite.ErrStillCached) {
			continue
		}
		if err != nil {
			c.log.Warn("storage read rate not measured", "file", m.Path, "err", err)
			return
		}
		c.pool().SetReadRate(rate)
		r := storage.ReadRate{BytesPerSec: rate, Bytes: size, File: m.Path, Measured: time.Now().UTC()}
		if err := c.store().PutReadRate(dev, r); err != nil {
			c.log.Warn("storage read rate not stored", "err", err)
		}
		c.log.Info("storage read rate measured", "device", dev, "mb_per_s", rate/1e6, "file", m.Path)
		c.event("storage_read_rate", map[string]any{"device": dev, "bytes_per_sec": rate, "bytes": size})
		return
	}
	c.log.Info("storage read rate not measured: no model file that nothing maps could be read cold", "device", dev)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
