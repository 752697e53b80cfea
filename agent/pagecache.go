package agent

import (
	"log/slog"

	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// pageCache looks after the model files below the pool: the storage's
// cold read rate (readrate.go) and huge pages in the page cache
// (hugepages.go). It holds no lock; its loop runs under the agent's
// runCtx and stops with it.
type pageCache struct {
	pageCacheDeps
	// device is the models' storage device: set by the start (and again
	// once every model is registered), read by measureReadRate after.
	device string
	kick   chan struct{} // a reload or a large eviction: check model pages (cap 1)
}

// pageCacheDeps is what the page cache asks of the agent. pool and store
// are functions: both exist only once the agent has started.
type pageCacheDeps struct {
	log     *slog.Logger
	config  func() *Config
	pool    func() *tflite.Pool
	store   func() *storage.Store
	settled func() <-chan struct{}
	event   func(kind string, fields map[string]any)
}

func newPageCache(d pageCacheDeps) *pageCache {
	return &pageCache{pageCacheDeps: d, kick: make(chan struct{}, 1)}
}
