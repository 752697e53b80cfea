package update

import (
	"io"
	"log/slog"
	"testing"
)

// Outcomes count per version: requests the old version answers after the
// swap (leased before it) never roll the new one back, however many fail;
// the new version's own failures still do.
func TestRollbackCountsPerVersion(t *testing.T) {
	const window = 20 // updates.rollback_window's default
	m := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Settings: func() Settings { return Settings{RollbackWindow: window, AutoRollback: true} }})
	for range window {
		m.noteOutcome("m", "v1", false)
	}
	m.guard("m", "v1", "v2")
	for i := range window {
		if reason := m.noteOutcome("m", "v1", true); reason != "" {
			t.Fatalf("old-version failure %d after the swap rolled v2 back: %s", i+1, reason)
		}
	}
	reason := ""
	for i := 0; i < window && reason == ""; i++ {
		reason = m.noteOutcome("m", "v2", true)
	}
	if reason == "" {
		t.Fatal("v2 failing every request was not rolled back")
	}
}
