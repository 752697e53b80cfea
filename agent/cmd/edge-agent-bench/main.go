// Command edge-agent-bench is the benchmark: the naive baseline beside the
// agent, side by side, written as a report (`make bench`). It is a separate
// binary so the device binary ships no benchmark code.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/edge-agent/edge-agent/agent/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
