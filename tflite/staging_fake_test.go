package tflite

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Staging a new version never evicts the serving one, idle or leased,
// pinned or not: with room for one, the staged version is refused
// (ErrOverBudget) while the serving one stays warm; another idle model
// gives up its room instead when there is one. The staged version is then
// kept against other models' loads until promoted.
func TestFakePoolStagingNeverEvictsTheServingVersion(t *testing.T) {
	for _, leased := range []bool{false, true} {
		p, _ := fakePool(t, PoolOptions{Budget: 120}, map[string]*fakeModel{"m": {size: 40, heap: 10}, "other": {size: 40, heap: 10}, "x": {size: 50, heap: 10}})
		if err := p.Register(ModelSpec{ID: "m@v2", Path: "x", KnownHeap: 10, StagingOf: "m"}); err != nil {
			t.Fatal(err)
		}
		use(t, p, "m")
		if leased {
			l, err := p.Acquire(context.Background(), "m")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()
		}
		use(t, p, "other")
		// 50 (m) + 50 (other) + 60 (staged) > 120: other leaves, m stays.
		if _, _, err := p.Prewarm(context.Background(), "m@v2"); err != nil {
			t.Fatalf("leased=%v: staging with an idle model to give up its room: %v", leased, err)
		}
		if w := warmIDs(p); !w["m"] || !w["m@v2"] || w["other"] {
			t.Fatalf("leased=%v: warm %v, want m and m@v2", leased, w)
		}
		// A load of another model does not push the staged version out
		// (an idle serving version may leave, as any idle model).
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		if l, err := p.Acquire(ctx, "other"); err == nil {
			l.Release()
		}
		cancel()
		if w := warmIDs(p); !w["m@v2"] {
			t.Fatalf("leased=%v: another model's load pushed the staged version out: warm %v", leased, w)
		}
	}

	// Room for one: the staged version is refused, m stays warm.
	p, l := fakePool(t, PoolOptions{Budget: 70}, map[string]*fakeModel{"m": {size: 40, heap: 10}, "x": {size: 50, heap: 10}})
	if err := p.Register(ModelSpec{ID: "m@v2", Path: "x", KnownHeap: 10, StagingOf: "m"}); err != nil {
		t.Fatal(err)
	}
	use(t, p, "m")
	before := l.warmups
	if _, _, err := p.Prewarm(context.Background(), "m@v2"); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("staging with room for one version: %v, want over_budget", err)
	}
	if w := warmIDs(p); !w["m"] || l.warmups != before {
		t.Fatalf("staging pushed the serving version out: warm %v, %d warm-ups", w, l.warmups-before)
	}
}

// With room for one version, Drain empties the serving one (pinned too)
// after its lease in flight is released, requests meanwhile wait instead of
// failing, the new version is warmed alone, and Promote hands the waiting
// requests to it. A staged version evicted before Promote is refused as
// cold.
func TestFakePoolDrainChecksAloneAndPromotes(t *testing.T) {
	p, _ := fakePool(t, PoolOptions{Budget: 70}, map[string]*fakeModel{"m": {size: 40, heap: 10}, "x": {size: 50, heap: 10}}, "m")
	if err := p.Register(ModelSpec{ID: "m@v2", Path: "x", KnownHeap: 10, StagingOf: "m", Version: "v2"}); err != nil {
		t.Fatal(err)
	}
	inFlight, err := p.Acquire(context.Background(), "m")
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	var resume func()
	go func() {
		var err error
		resume, err = p.Drain(context.Background(), "m")
		drained <- err
	}()
	waiting := acquireInBackground(p, "m")
	select {
	case err := <-drained:
		t.Fatalf("drained while a lease was in flight: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	inFlight.Release()
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	_ = resume
	if w := warmIDs(p); w["m"] {
		t.Fatalf("the drained version is still warm: %v", w)
	}
	if _, _, err := p.Prewarm(context.Background(), "m@v2"); err != nil {
		t.Fatalf("the new version alone: %v", err)
	}
	select {
	case err := <-waiting:
		t.Fatalf("a request during the drain did not wait: %v", err)
	default:
	}
	if _, err := p.Promote("m@v2", "m"); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; err != nil {
		t.Fatalf("the request that waited through the drain: %v", err)
	}
	l, err := p.Acquire(context.Background(), "m")
	if err != nil || l.Version() != "v2" {
		t.Fatalf("after the promote: %v %v", l, err)
	}
	l.Release()

	// A staged version that lost its warmth is not promoted.
	if err := p.Register(ModelSpec{ID: "m@v3", Path: "x", KnownHeap: 10, StagingOf: "m"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Promote("m@v3", "m"); !errors.Is(err, ErrCold) {
		t.Fatalf("promote of a cold staged version: %v", err)
	}
}
