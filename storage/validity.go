package storage

import "strings"

// Validity is what a cached fact holds for. A fact is used only when every
// component matches.
type Validity struct {
	Model    string `json:"model"`    // sha256 of the model file
	Runtime  string `json:"runtime"`  // TFLite runtime version
	Hardware string `json:"hardware"` // hardware fingerprint
	Options  string `json:"options"`  // what else shapes it, e.g. "threads=auto"
}

func (v Validity) key() []byte {
	return []byte(v.Model + "|" + v.Runtime + "|" + v.Hardware + "|" + v.Options)
}

// Diff names the components of v that differ from o.
func (v Validity) Diff(o Validity) []string {
	var d []string
	if v.Model != o.Model {
		d = append(d, "model")
	}
	if v.Runtime != o.Runtime {
		d = append(d, "runtime")
	}
	if v.Hardware != o.Hardware {
		d = append(d, "hardware")
	}
	if v.Options != o.Options {
		d = append(d, "options")
	}
	return d
}

// Status says whether a cached fact could be used.
type Status string

const (
	Restored    Status = "restored"    // found, valid for the current key
	Invalidated Status = "invalidated" // found for a different key: not used
	New         Status = "new"         // nothing known yet
	// Fleet: nothing known here, but a twin (same model, runtime, hardware
	// and options) published its measurement, used until verified.
	Fleet Status = "fleet"
)

// Lookup is the outcome of asking for a fact.
type Lookup struct {
	Status Status `json:"status"`
	// Reason lists what changed when Status is Invalidated, e.g. "model,runtime".
	Reason string `json:"reason,omitempty"`
}

func invalidated(old, cur Validity) Lookup {
	return Lookup{Status: Invalidated, Reason: strings.Join(old.Diff(cur), ",")}
}
