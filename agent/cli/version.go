package cli

import (
	"math"
	"runtime"
	"time"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/tflite"
)

// VersionInfo is the stable JSON of `edge-agent version --json`.
type VersionInfo struct {
	Agent  string `json:"agent"`
	Go     string `json:"go"`
	TFLite string `json:"tflite"`
	OS     string `json:"os"`
	Arch   string `json:"arch"`
}

func versionInfo() VersionInfo {
	return VersionInfo{Agent: agent.Version, Go: runtime.Version(), TFLite: tflite.RuntimeVersion(), OS: runtime.GOOS, Arch: runtime.GOARCH}
}

// ms is a duration in milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
