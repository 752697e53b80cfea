package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrMissingInputs: the models folder lacks files the bench needs.
var ErrMissingInputs = errors.New("bench: the models folder lacks what the bench needs")

// neededFiles are the shared files the full run reads: models and the
// images they are asked about.
func neededFiles(quick bool) []string {
	var files []string
	files = append(files, servingModels...)
	files = append(files, zooShared...)
	for _, m := range firstStartModels {
		if quick && m.id == "deeplab" {
			continue
		}
		files = append(files, m.file)
		if m.input != "" {
			files = append(files, m.input)
		}
	}
	slices.Sort(files)
	return slices.Compact(files)
}

// checkInputs fails before any work when dir is not a folder or lacks a
// needed file, naming every missing one (a bench that fails minutes in,
// at the first model it lacks, wastes the run).
func checkInputs(dir string, quick bool) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%w: %s: %w (use --models DIR)", ErrMissingInputs, dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a folder (use --models DIR)", ErrMissingInputs, dir)
	}
	var missing []string
	for _, f := range neededFiles(quick) {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || !fi.Mode().IsRegular() {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s lacks %s (use --models DIR)", ErrMissingInputs, dir, strings.Join(missing, ", "))
	}
	return nil
}
