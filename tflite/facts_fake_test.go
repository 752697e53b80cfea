package tflite

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// inspectCounter counts the file reads registering makes.
type inspectCounter struct {
	*fakeLoader
	inspects atomic.Int32
}

func (c *inspectCounter) inspect(path string) (fileInfo, error) {
	c.inspects.Add(1)
	return c.fakeLoader.inspect(path)
}

// Facts for the file at Path now spare registering its read; facts about
// a file since replaced (same size, new inode) do not.
func TestRegisterTakesFactsOfTheSameFileIdentity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.tflite")
	if err := os.WriteFile(path, make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	l := &inspectCounter{fakeLoader: newFakeLoader(map[string]*fakeModel{path: {size: 100, heap: 1}})}
	p := newPool(PoolOptions{}, l)
	defer p.Close()
	id, err := StatID(path)
	if err != nil {
		t.Fatal(err)
	}
	facts := &FileFacts{ID: id, Digest: "d", Variables: true}
	if err := p.Register(ModelSpec{ID: "a", Path: path, Facts: facts}); err != nil {
		t.Fatal(err)
	}
	if n := l.inspects.Load(); n != 0 {
		t.Fatalf("registering with the file's facts read it %d times", n)
	}
	if e := p.entries["a"]; e.fileSize != 100 || !e.vars {
		t.Fatalf("entry: size %d vars %v, want the facts' 100, true", e.fileSize, e.vars)
	}
	tmp := filepath.Join(dir, "new")
	if err := os.WriteFile(tmp, make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if err := p.Register(ModelSpec{ID: "b", Path: path, Facts: facts}); err != nil {
		t.Fatal(err)
	}
	if n := l.inspects.Load(); n != 1 {
		t.Fatalf("stale facts: the replaced file read %d times, want 1", n)
	}
}

// A model not registered yet is asked for through Resolve, which may
// register it: the request is then served, not refused as unknown.
func TestAcquireResolvesUnregisteredModel(t *testing.T) {
	l := newFakeLoader(map[string]*fakeModel{"late": {size: 10, heap: 1}})
	var p *Pool
	asked := 0
	p = newPool(PoolOptions{Resolve: func(_ context.Context, id string) bool {
		asked++
		return id == "late" && p.Register(ModelSpec{ID: id, Path: id}) == nil
	}}, l)
	defer p.Close()
	lease, err := p.Acquire(context.Background(), "late")
	if err != nil {
		t.Fatal(err)
	}
	lease.Release()
	if _, err := p.Acquire(context.Background(), "never"); err == nil {
		t.Fatal("an id Resolve does not know was served")
	}
	if asked != 2 {
		t.Fatalf("Resolve asked %d times, want 2 (once per unknown id)", asked)
	}
}
