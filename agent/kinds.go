package agent

import "github.com/edge-agent/edge-agent/errcode"

// ErrConfig marks an invalid configuration.
var ErrConfig = errcode.New("config_invalid", "invalid configuration")
