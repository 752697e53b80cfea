package agent

import (
	"io"
	"log/slog"
	"testing"
)

// Outcomes count per version: requests the old version answers after the
// swap (leased before it) never roll the new one back, however many fail;
// the new version's own failures still do.
func TestRollbackCountsPerVersion(t *testing.T) {
	cfg := DefaultConfig()
	a := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	window := cfg.Updates.RollbackWindow
	for range window {
		a.noteOutcome("m", "v1", false)
	}
	a.guardUpdate("m", "v1", "v2")
	for i := range window {
		if reason := a.noteOutcome("m", "v1", true); reason != "" {
			t.Fatalf("old-version failure %d after the swap rolled v2 back: %s", i+1, reason)
		}
	}
	reason := ""
	for i := 0; i < window && reason == ""; i++ {
		reason = a.noteOutcome("m", "v2", true)
	}
	if reason == "" {
		t.Fatal("v2 failing every request was not rolled back")
	}
}
