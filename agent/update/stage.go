package update

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edge-agent/edge-agent/errcode"
	"github.com/edge-agent/edge-agent/tflite"
)

// Where an update is staged. The pool never evicts the serving version to
// stage its update (tflite.ModelSpec.StagingOf); when the new version does
// not fit beside it, even with the room other idle models give up, the
// serving version is drained (its requests wait, bounded by updateDrain)
// and the new one is warmed and checked alone, then swapped in or the old
// one restored.

// ErrNoRoom: the update does not fit the budget even alone, or the serving
// version did not drain in time.
var ErrNoRoom = errcode.New("update_no_room", "the update does not fit the memory budget, even alone")

// updateDrain bounds the wait for the serving version's requests in flight
// before a new version is checked alone.
const updateDrain = 5 * time.Second

// stage is how an update was staged: how ("beside", "alone", "refused")
// and, while the serving version is drained, how to let it serve again.
type stage struct {
	how    string
	resume func()
}

// stage warms the staged version: beside the serving one when it
// fits, else alone after draining the serving one.
func (m *Manager) stage(ctx context.Context, id, staged string, s *stage) (tflite.LoadReport, error) {
	if s.resume == nil {
		s.how = "beside"
		load, _, err := m.pool().Prewarm(ctx, staged)
		if !errors.Is(err, tflite.ErrOverBudget) && !errors.Is(err, tflite.ErrBusy) {
			return load, err // warm, or a load failure: refused as it is
		}
		m.log.Info("no room to stage the update beside the serving version; checking it alone", "model", id)
		dctx, cancel := context.WithTimeout(ctx, updateDrain)
		resume, err := m.pool().Drain(dctx, id)
		cancel()
		if err != nil {
			s.how = "refused"
			return tflite.LoadReport{}, fmt.Errorf("%w: the serving version did not drain within %s: %w", ErrNoRoom, updateDrain, err)
		}
		s.resume = resume
	}
	s.how = "alone"
	load, _, err := m.pool().Prewarm(ctx, staged)
	if errors.Is(err, tflite.ErrOverBudget) {
		s.how = "refused"
		return load, fmt.Errorf("%w: %w", ErrNoRoom, err)
	}
	return load, err
}

// restoreServing lets a drained serving version serve again after its
// update was refused, and warms it back.
func (m *Manager) restoreServing(id string, s *stage) {
	if s.resume == nil {
		return
	}
	s.resume()
	s.resume = nil
	m.o.Rewarm(id)
}
