package agent

import (
	"context"
	"time"

	"github.com/edge-agent/edge-agent/tflite"
)

// hugeRecheck is how long a model file checked (and read in again if it
// had to be) is left alone: the kernel may reclaim or split folios
// meanwhile, and each reread costs a read of the file from storage.
const hugeRecheck = 10 * time.Minute

// hugePagesLoop has the page cache hold large model files in 2 MiB folios
// ([pool] huge_pages; see tflite.CacheHuge): once the start has settled,
// after each reload has, when a large model leaves the pool (a mapped
// file's pages cannot be dropped, so a warm model waits for that) and
// every hugeRecheck.
func (c *pageCache) hugePagesLoop(ctx context.Context) {
	if !c.config().hugePages() {
		return
	}
	t := time.NewTicker(hugeRecheck)
	defer t.Stop()
	checked := map[tflite.FileID]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.settled():
		}
		if !c.cacheHugePages(ctx, checked) {
			c.log.Info("this kernel keeps model files in small pages: [pool] huge_pages has nothing to do")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-t.C:
		}
	}
}

// kickHugePages asks hugePagesLoop for a pass (a large model was evicted,
// models were registered).
func (c *pageCache) kickHugePages() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// cacheHugePages goes over the registered models once, passing over the
// mapped ones, the small ones and those checked within hugeRecheck. It
// returns false when a reread gave no huge folio at all: the kernel has
// none for these files, and rereading them would only cost reads.
func (c *pageCache) cacheHugePages(ctx context.Context, checked map[tflite.FileID]time.Time) bool {
	now := time.Now()
	for id, at := range checked {
		if now.Sub(at) >= hugeRecheck {
			delete(checked, id)
		}
	}
	for _, m := range c.pool().Models() {
		if ctx.Err() != nil {
			return true
		}
		fid, err := tflite.StatID(m.Path)
		if err != nil || m.Mapped || fid.Size < tflite.HugeMin {
			continue
		}
		if _, ok := checked[fid]; ok {
			continue
		}
		checked[fid] = now
		r, err := tflite.CacheHuge(m.Path, true)
		switch {
		case err != nil:
			c.log.Warn("model pages not read in as huge pages", "model", m.ID, "err", err)
		case r.Reread > 0:
			c.log.Info("model pages read in again as huge pages", "model", m.ID,
				"huge_bytes", r.Huge, "size", r.Size, "reread_bytes", r.Reread, "took_ms", ms(r.Took))
			c.event("huge_pages", map[string]any{"model": m.ID, "huge_bytes": r.Huge, "size": r.Size,
				"reread_bytes": r.Reread, "took_ms": ms(r.Took)})
			if r.Huge == 0 {
				return false
			}
		default:
			c.log.Debug("model pages checked", "model", m.ID, "huge_bytes", r.Huge, "size", r.Size)
		}
	}
	return true
}
