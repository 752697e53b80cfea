package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// RunSteadyForTest exposes runSteady to the package's external tests.
var RunSteadyForTest = runSteady

// SDCardForTest makes an emulated SD card holding models' files, throttled
// to rate bytes/s; it returns the card's folder, a cold read's measured
// rate through it, and its Close.
func SDCardForTest(work, models string, rate float64) (dir string, measured float64, closeFn func() error, err error) {
	s, err := newSDStorage(context.Background(), work, models, rate)
	if err != nil {
		return "", 0, nil, err
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil || len(ents) == 0 {
		_ = s.Close()
		return "", 0, nil, fmt.Errorf("empty card: %v", err)
	}
	measured, err = s.measure(filepath.Join(s.dir, ents[0].Name()))
	if err != nil {
		_ = s.Close()
		return "", 0, nil, err
	}
	return s.dir, measured, s.Close, nil
}
