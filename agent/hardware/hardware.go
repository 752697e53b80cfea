// Package hardware describes the board the agent calibrates on: what
// cached facts depend on, and its fingerprint in their validity keys.
package hardware

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Info is what calibration depends on about the board. Its Fingerprint
// is part of every cached fact's validity key.
type Info struct {
	Arch     string `json:"arch"`
	CPUModel string `json:"cpu_model"`
	Cores    int    `json:"cores"`
	Board    string `json:"board,omitempty"` // /proc/device-tree/model, when present
}

// Read reads /proc/cpuinfo and /proc/device-tree/model below root
// ("/" on a device; a fixture tree in tests). Missing files mean no data.
func Read(root string) Info {
	h := Info{Arch: runtime.GOARCH}
	if b, err := os.ReadFile(filepath.Join(root, "proc/cpuinfo")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		var arm []string
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			switch k {
			case "processor":
				h.Cores++
			case "model name":
				if h.CPUModel == "" {
					h.CPUModel = v
				}
			case "CPU implementer", "CPU part", "CPU variant", "CPU revision":
				// ARM boards name no model; the part number identifies the core.
				if len(arm) < 4 {
					arm = append(arm, k[4:]+"="+v)
				}
			}
		}
		if h.CPUModel == "" && len(arm) > 0 {
			h.CPUModel = strings.Join(arm, " ")
		}
	}
	if h.Cores == 0 {
		h.Cores = runtime.NumCPU()
	}
	if b, err := os.ReadFile(filepath.Join(root, "proc/device-tree/model")); err == nil {
		h.Board = strings.TrimSpace(strings.TrimRight(string(b), "\x00"))
	}
	return h
}

// Fingerprint is a short stable hash of h.
func (h Info) Fingerprint() string {
	b, _ := json.Marshal(h)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
