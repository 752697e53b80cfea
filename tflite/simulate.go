package tflite

import (
	"fmt"
	"time"
)

// SimModel is one model as a simulated runtime knows it: what real loads
// measured, replayed without C.
type SimModel struct {
	Size   int64  // mapped bytes
	Heap   int64  // C heap per interpreter
	Stages Stages // a full cold load: map, page-in, interpreter, allocate, first and steady invoke
}

// NewSimulatedPool is a pool over a simulated runtime: the same budget,
// leases, policies and eviction as NewPool, but a load spends no time and
// reports the model's measured stages. The bench's trace replay uses it to
// run a day of requests in seconds; give the pool a virtual clock (Now).
// models is keyed by ModelSpec.Path. pageIn, when set, is the page-in a
// load of path pays now (the caller's model of the page cache).
func NewSimulatedPool(o PoolOptions, models map[string]SimModel, pageIn func(path string) time.Duration) *Pool {
	return newPool(o, &simLoader{models: models, pageIn: pageIn})
}

type simLoader struct {
	models map[string]SimModel
	pageIn func(string) time.Duration
}

type simMapping struct {
	m SimModel
}

func (m *simMapping) mappedBytes() int64 { return m.m.Size }
func (m *simMapping) Close() error       { return nil }

// simInstance's invokes take its model's steady time (a simulated load
// reports the first invoke's).
type simInstance struct{ steady time.Duration }

func (i simInstance) invokeTime() time.Duration { return i.steady }
func (simInstance) Invoke() error               { return nil }
func (simInstance) ResetVariables() error       { return nil }
func (simInstance) Delegates() []string         { return nil }
func (simInstance) Close()                      {}

func (l *simLoader) model(path string) (SimModel, error) {
	m, ok := l.models[path]
	if !ok {
		return SimModel{}, &Error{Op: "simulate", Path: path, Kind: ErrModelNotFound, Detail: fmt.Sprintf("no measured costs for %s", path)}
	}
	return m, nil
}

func (l *simLoader) inspect(path string) (fileInfo, error) {
	m, err := l.model(path)
	return fileInfo{size: m.Size}, err
}

func (l *simLoader) nonResident(path string) int64 {
	if l.pageIn != nil && l.pageIn(path) > 0 {
		return l.models[path].Size
	}
	return 0
}

func (l *simLoader) mapModel(path string, _ bool) (mapping, time.Duration, time.Duration, error) {
	m, err := l.model(path)
	if err != nil {
		return nil, 0, 0, err
	}
	pageIn := m.Stages.PageIn
	if l.pageIn != nil {
		pageIn = max(pageIn, l.pageIn(path))
	}
	return &simMapping{m: m}, m.Stages.Map, pageIn, nil
}

func (l *simLoader) warm(mp mapping, _ Options, _ WarmOptions) (instance, Stages, int64, error) {
	m := mp.(*simMapping).m
	st := m.Stages
	st.Map, st.PageIn = 0, 0 // the pool adds the mapping's own
	return simInstance{steady: m.Stages.Steady}, st, m.Heap, nil
}

func (l *simLoader) heapInUse() int64 { return 0 }
func (l *simLoader) releaseHeap()     {}
