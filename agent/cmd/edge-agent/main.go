// Command edge-agent is the warm-start agent for TensorFlow Lite models.
// Everything but signal handling lives in package agent.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/agent/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	main := agent.Main
	if len(os.Args) > 1 && os.Args[1] == "bench" {
		// The benchmark drives whole agents, so it cannot live in package agent.
		main = func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
			return bench.Main(ctx, args[1:], stdout, stderr)
		}
	}
	code := main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
