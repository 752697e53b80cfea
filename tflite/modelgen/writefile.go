package modelgen

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes the model to path atomically (a temporary file, synced,
// then renamed), so a killed run never leaves half a model where the agent
// would load it.
func WriteFile(path string, spec Spec) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	f, err := os.CreateTemp(dir, ".model-*.tmp")
	if err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	defer func() { _ = os.Remove(f.Name()) }()
	if err := Write(f, spec); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write model %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write model %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	return nil
}
