package agent

import (
	"context"
	"sync"
)

// goroutines are the agent's own (MQTT, metrics, usage, planner, loops):
// they run under ctx from Start and stop with Close, which waits for them.
type goroutines struct {
	ctx  context.Context // nil before Start
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// start makes the context they run under; Start calls it once, before it
// spawns anything.
func (g *goroutines) start() context.Context {
	g.ctx, g.stop = context.WithCancel(context.Background())
	return g.ctx
}

// spawn runs f on a goroutine the agent owns until Close.
func (g *goroutines) spawn(ctx context.Context, f func(context.Context)) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f(ctx)
	}()
}

// close cancels them and waits until every one has returned.
func (g *goroutines) close() {
	if g.stop != nil {
		g.stop()
	}
	g.wg.Wait()
}
