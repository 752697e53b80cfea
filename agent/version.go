package agent

// Version is stamped at build time: -ldflags "-X .../agent.Version=v1.2.3".
var Version = "dev"

// SchemaVersion versions every JSON document the agent and its CLI print.
const SchemaVersion = 1
