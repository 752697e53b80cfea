// Package storage is the agent's memory across restarts: one bbolt file
// with a versioned schema, holding what the agent learned about each model
// on this board (calibration, delegate outcomes), usage history for the
// planner, the digest cache, and the telemetry outbox.
//
// Every cached fact is stored under the Validity it holds for (model
// digest × runtime version × hardware fingerprint × options), so a changed
// model, runtime or board is never served a stale fact. Every value carries
// a CRC32C: bbolt checks its meta pages but not data pages, so a flipped bit
// in a value would otherwise go unnoticed. A damaged file is moved aside and
// replaced by a fresh one; the agent keeps running.
package storage
