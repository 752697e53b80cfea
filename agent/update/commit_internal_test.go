package update

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// fakePool records what the manager asks of the pool.
type fakePool struct {
	registered map[string]bool
	promoted   []string
}

func (p *fakePool) Register(s tflite.ModelSpec) error { p.registered[s.ID] = true; return nil }
func (p *fakePool) Unregister(id string) error        { delete(p.registered, id); return nil }
func (p *fakePool) Prewarm(context.Context, string) (tflite.LoadReport, bool, error) {
	return tflite.LoadReport{}, true, nil
}
func (p *fakePool) Drain(context.Context, string) (func(), error) { return func() {}, nil }
func (p *fakePool) Promote(staged, id string) (time.Time, error) {
	p.promoted = append(p.promoted, staged)
	delete(p.registered, staged) // the staged version now serves as id
	p.registered[id] = true
	return time.Now(), nil
}
func (p *fakePool) Acquire(context.Context, string) (*tflite.Lease, error) {
	return nil, errors.New("not in this test")
}

type fakeStore struct{ v map[string]storage.Versions }

func (s *fakeStore) Versions(id string) (storage.Versions, error) { return s.v[id], nil }
func (s *fakeStore) UpdateVersions(id string, fn func(*storage.Versions)) error {
	v := s.v[id]
	fn(&v)
	s.v[id] = v
	return nil
}

// fakeHost serves one version per model; Commit swaps it when from still
// serves.
type fakeHost struct {
	serving map[string]string
	events  []string
}

func (h *fakeHost) Current(id string) (Model, bool) {
	d, ok := h.serving[id]
	return Model{ID: id, Digest: d, Servable: true}, ok
}
func (h *fakeHost) Commit(from, to Model, swap func() error) error {
	if h.serving[from.ID] != from.Digest {
		return ErrSuperseded
	}
	if err := swap(); err != nil {
		return err
	}
	h.serving[to.ID] = to.Digest
	return nil
}
func (h *fakeHost) Spec(m Model) tflite.ModelSpec        { return tflite.ModelSpec{ID: m.ID, Path: m.Path} }
func (h *fakeHost) Prepare(cur Model, path string) Model { return Model{} }
func (h *fakeHost) Event(kind string, _ map[string]any)  { h.events = append(h.events, kind) }

func newFakeManager(t *testing.T) (*Manager, *fakePool, *fakeStore, *fakeHost) {
	p := &fakePool{registered: map[string]bool{}}
	s := &fakeStore{v: map[string]storage.Versions{}}
	h := &fakeHost{serving: map[string]string{"m": "aaaa"}}
	dir := t.TempDir()
	m := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Host: h,
		Pool: func() Pool { return p }, Store: func() Store { return s },
		Settings: func() Settings { return Settings{StateDir: dir, RollbackWindow: 4} }})
	return m, p, s, h
}

// A version is swapped in only through the host's commit, and an update
// whose serving version changed meanwhile is dropped: never promoted, its
// staging unregistered, nothing recorded.
func TestApplyCommitsThroughTheHost(t *testing.T) {
	m, p, s, h := newFakeManager(t)
	old, neu := Model{ID: "m", Digest: "aaaa"}, Model{ID: "m", Digest: "bbbb"}
	if _, err := m.apply(context.Background(), old, neu, "test"); err != nil {
		t.Fatal(err)
	}
	if h.serving["m"] != "bbbb" || len(p.promoted) != 1 || s.v["m"].Current != "bbbb" || s.v["m"].Previous != "aaaa" {
		t.Fatalf("serving %q, promoted %v, versions %+v: want bbbb swapped in and recorded", h.serving["m"], p.promoted, s.v["m"])
	}

	_, err := m.apply(context.Background(), old, Model{ID: "m", Digest: "cccc"}, "test") // aaaa no longer serves
	if err == nil || h.serving["m"] != "bbbb" || len(p.promoted) != 1 || s.v["m"].Current != "bbbb" {
		t.Fatalf("superseded update: err %v, serving %q, promoted %v, versions %+v", err, h.serving["m"], p.promoted, s.v["m"])
	}
	for id := range p.registered {
		if IsStaging(id) {
			t.Fatalf("staging left registered: %v", p.registered)
		}
	}
}
