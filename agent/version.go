package agent

import (
	"runtime"

	"github.com/edge-agent/edge-agent/tflite"
)

// Version is stamped at build time: -ldflags "-X .../agent.Version=v1.2.3".
var Version = "dev"

// VersionInfo is the stable JSON of `edge-agent version --json`.
type VersionInfo struct {
	Agent  string `json:"agent"`
	Go     string `json:"go"`
	TFLite string `json:"tflite"`
	OS     string `json:"os"`
	Arch   string `json:"arch"`
}

func versionInfo() VersionInfo {
	return VersionInfo{Agent: Version, Go: runtime.Version(), TFLite: tflite.RuntimeVersion(), OS: runtime.GOOS, Arch: runtime.GOARCH}
}
