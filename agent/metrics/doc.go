// Package metrics keeps the agent's request latencies (per model, since
// start and over the metrics interval, split by version during an update)
// and exports what the agent measures to Prometheus. It reads the agent
// only through the functions it is given (PromOptions): it imports no
// package of the agent's.
package metrics
