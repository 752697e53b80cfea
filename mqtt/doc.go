// Package mqtt connects the agent to its fleet over MQTT (paho): retained
// availability with a last will, telemetry flushed in order from the
// agent's durable outbox and removed only once the broker acknowledged it,
// and commands on topics with strict decoding and replies.
//
// Topics, under Options.Prefix (default "edge") and the device id:
//
//	<prefix>/<device>/status                    retained {"status":"online"|"offline"}, last will "offline"
//	<prefix>/<device>/<outbox topic>            telemetry, e.g. telemetry/startup (retained), telemetry/events, metrics
//	<prefix>/<device>/cmd/<verb>[/<id>[/<model>]]  commands (QoS 1)
//	<prefix>/<device>/reply/<id>                replies
//
// Message handlers never block or publish: a command goes to a bounded
// queue (a full queue answers "busy") and workers run it and publish the
// reply (paho issues #474, #509 are the deadlocks this avoids).
package mqtt
