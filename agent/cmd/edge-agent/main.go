// Command edge-agent is the warm-start agent for TensorFlow Lite models.
// Everything but signal handling lives in agent/cli; the benchmark is
// its own binary (agent/cmd/edge-agent-bench).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/edge-agent/edge-agent/agent/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
