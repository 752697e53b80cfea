package storage_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/storage"
	bolt "go.etcd.io/bbolt"
)

// mustOpen opens a store in dir, failing the test on error (like bbolt's
// MustCreateDB).
func mustOpen(t *testing.T, dir string, o storage.Options) (*storage.Store, storage.OpenReport) {
	t.Helper()
	s, rep, err := storage.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, rep
}

func TestOpenCreateReopen(t *testing.T) {
	dir := t.TempDir()
	s, rep := mustOpen(t, dir, storage.Options{})
	if !rep.Created || rep.Corruption != nil || rep.Path != filepath.Join(dir, storage.FileName) {
		t.Fatalf("report %+v", rep)
	}
	if _, _, err := s.Append("t", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, rep2 := mustOpen(t, dir, storage.Options{})
	if rep2.Created || rep2.MigratedFrom != 0 {
		t.Fatalf("reopen report %+v", rep2)
	}
	if st, _ := s2.OutboxStats(); st.Count != 1 {
		t.Fatalf("outbox %+v", st)
	}
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestNewerSchemaRefusedUntouched(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir, storage.Options{})
	s.Close()
	path := filepath.Join(dir, storage.FileName)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte{0, 0, 0, 0, 0, 0, 0, 99})
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before := fileSum(t, path)
	_, _, err = storage.Open(dir, storage.Options{})
	if !errors.Is(err, storage.ErrSchemaTooNew) || !strings.Contains(err.Error(), "schema 99") {
		t.Fatalf("open newer: %v", err)
	}
	if fileSum(t, path) != before {
		t.Fatal("a newer file was rewritten")
	}
}

func TestMigrationFromEmptySchema(t *testing.T) {
	dir := t.TempDir()
	// A bbolt file with data but no schema: version 0.
	db, err := bolt.Open(filepath.Join(dir, storage.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("meta")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, rep := mustOpen(t, dir, storage.Options{})
	if rep.MigratedFrom != 0 || rep.Created {
		t.Fatalf("report %+v", rep)
	}
	if _, _, err := s.Append("t", nil); err != nil {
		t.Fatalf("migrated store unusable: %v", err)
	}
}

func TestLockTimeout(t *testing.T) {
	dir := t.TempDir()
	mustOpen(t, dir, storage.Options{})
	_, _, err := storage.Open(dir, storage.Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestCorruptFilesMovedAside(t *testing.T) {
	// A healthy file with records in it, to damage in different ways.
	healthy := func(t *testing.T) (string, []byte) {
		dir := t.TempDir()
		s, _ := mustOpen(t, dir, storage.Options{})
		for i := range 50 {
			if _, _, err := s.Append(fmt.Sprintf("edge/MARKER-%04d/events", i), []byte("payload")); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		b, err := os.ReadFile(filepath.Join(dir, storage.FileName))
		if err != nil {
			t.Fatal(err)
		}
		return dir, b
	}
	cases := []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"truncated to a page", func(b []byte) []byte { return b[:4096] }},
		{"empty", func(b []byte) []byte { return nil }},
		{"bit flip in a record", func(b []byte) []byte {
			i := bytes.Index(b, []byte("MARKER-0025"))
			if i < 0 {
				panic("marker not found")
			}
			b[i+3] ^= 0x10
			return b
		}},
		{"both meta pages", func(b []byte) []byte {
			b[16+60] ^= 0xff
			b[4096+16+60] ^= 0xff
			return b
		}},
		{"random bytes", func(b []byte) []byte {
			for i := range b {
				b[i] = byte(i*7 + 3)
			}
			return b
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, b := healthy(t)
			damaged := c.damage(append([]byte{}, b...))
			path := filepath.Join(dir, storage.FileName)
			if err := os.WriteFile(path, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			s, rep := mustOpen(t, dir, storage.Options{})
			if rep.Corruption == nil || !rep.Created {
				t.Fatalf("not detected: %+v", rep)
			}
			kept, err := os.ReadFile(rep.Corruption.MovedTo)
			if err != nil || !bytes.Equal(kept, damaged) {
				t.Fatalf("damaged file not kept for inspection: %v", err)
			}
			// The fresh store works.
			if _, _, err := s.Append("t", []byte("after")); err != nil {
				t.Fatal(err)
			}
			t.Logf("reason: %s", rep.Corruption.Reason)
		})
	}
}

func TestCalibrationValidity(t *testing.T) {
	s, _ := mustOpen(t, t.TempDir(), storage.Options{})
	v := storage.Validity{Model: "sha-a", Runtime: "2.14.1", Hardware: "hw-1", Options: "threads=auto"}
	if _, look, err := s.Calibration("m", v); err != nil || look.Status != storage.New {
		t.Fatalf("fresh: %+v %v", look, err)
	}
	cal := storage.Calibration{Validity: v, Threads: 2, HeapBytes: 1234,
		Tried:  []storage.ThreadResult{{Threads: 1, SteadyMs: 40}, {Threads: 2, SteadyMs: 25}},
		Stages: storage.Stages{Map: time.Millisecond, FirstInvoke: 50 * time.Millisecond, Steady: 25 * time.Millisecond}}
	if err := s.PutCalibration("m", cal); err != nil {
		t.Fatal(err)
	}
	got, look, err := s.Calibration("m", v)
	if err != nil || look.Status != storage.Restored || got.Threads != 2 || got.HeapBytes != 1234 || got.Stages != cal.Stages {
		t.Fatalf("restored: %+v %+v %v", got, look, err)
	}
	for _, c := range []struct {
		name   string
		change func(*storage.Validity)
	}{
		{"model", func(v *storage.Validity) { v.Model = "sha-b" }},
		{"runtime", func(v *storage.Validity) { v.Runtime = "2.16.1" }},
		{"hardware", func(v *storage.Validity) { v.Hardware = "hw-2" }},
		{"options", func(v *storage.Validity) { v.Options = "threads=4" }},
	} {
		v2 := v
		c.change(&v2)
		_, look, err := s.Calibration("m", v2)
		if err != nil || look.Status != storage.Invalidated || look.Reason != c.name {
			t.Errorf("%s changed: %+v %v", c.name, look, err)
		}
	}
	// Recalibrating under a new key replaces the old record.
	v3 := v
	v3.Runtime = "2.16.1"
	if err := s.PutCalibration("m", storage.Calibration{Validity: v3, Threads: 4}); err != nil {
		t.Fatal(err)
	}
	if _, look, _ := s.Calibration("m", v); look.Status != storage.Invalidated {
		t.Fatalf("old key after recalibration: %+v", look)
	}
	if c, look, _ := s.Calibration("m", v3); look.Status != storage.Restored || c.Threads != 4 {
		t.Fatalf("new key: %+v", look)
	}
	if _, look, _ := s.Calibration("other", v); look.Status != storage.New {
		t.Fatalf("other model: %+v", look)
	}
}

func TestDelegateStateAndCrashes(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir, storage.Options{})
	tpu := storage.Validity{Model: "sha", Runtime: "r", Hardware: "h", Options: "delegate=edgetpu@libedgetpu.so.1"}
	gpu := tpu
	gpu.Options = "delegate=gpu@libgpu.so"
	if err := s.BeginDelegateAttempt("m", "edgetpu", tpu); err != nil {
		t.Fatal(err)
	}
	if err := s.EndDelegateAttempt("m", "edgetpu", tpu, errors.New("library not found")); err != nil {
		t.Fatal(err)
	}
	// gpu: the process "dies" after the attempt record.
	if err := s.BeginDelegateAttempt("m", "gpu", gpu); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, rep := mustOpen(t, dir, storage.Options{})
	if len(rep.Crashed) != 1 || rep.Crashed[0].Delegate != "gpu" {
		t.Fatalf("crashed %+v", rep.Crashed)
	}
	if r, look, _ := s2.Delegate("m", "gpu", gpu); look.Status != storage.Restored || r.State != storage.Crashed || r.Attempts != 1 {
		t.Fatalf("gpu %+v %+v", r, look)
	}
	if r, look, _ := s2.Delegate("m", "edgetpu", tpu); look.Status != storage.Restored || r.State != storage.Failed || r.Reason != "library not found" {
		t.Fatalf("tpu %+v %+v", r, look)
	}
	// A new model file: what was known is invalidated, not silently new.
	tpu2 := tpu
	tpu2.Model = "sha-2"
	if _, look, _ := s2.Delegate("m", "edgetpu", tpu2); look.Status != storage.Invalidated || look.Reason != "model" {
		t.Fatalf("changed model: %+v", look)
	}
	if err := s2.ResetDelegate(gpu); err != nil {
		t.Fatal(err)
	}
	if _, look, _ := s2.Delegate("m", "gpu", gpu); look.Status == storage.Restored {
		t.Fatal("reset delegate still recorded")
	}
}

func TestUsageDecay(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC) // a Monday
	clock := func() time.Time { return now }
	s, _ := mustOpen(t, t.TempDir(), storage.Options{Now: clock, UsageHalfLife: 7 * 24 * time.Hour})
	if got := storage.HourOfWeek(now); got != 9 {
		t.Fatalf("hour of week %d", got)
	}
	if err := s.AddUsage([]storage.UsageEvent{{"a", now, 3}, {"a", now.Add(time.Hour), 1}, {"b", now, 2}}); err != nil {
		t.Fatal(err)
	}
	u, _ := s.Usage()
	if u["a"].Counts[9] != 3 || u["a"].Counts[10] != 1 || u["b"].Counts[9] != 2 {
		t.Fatalf("usage %+v", u)
	}
	now = now.Add(7 * 24 * time.Hour) // one half-life later
	u, _ = s.Usage()
	if got := u["a"].Counts[9]; got < 1.49 || got > 1.51 {
		t.Fatalf("after a half-life: %v, want 1.5", got)
	}
	if got := u["a"].Expected(now, now, 7*24*time.Hour); got < 1.49 || got > 1.51 {
		t.Fatalf("expected %v", got)
	}
}

func TestOutboxOrderAckAndBounds(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir, storage.Options{OutboxMaxCount: 10})
	for i := range 25 {
		seq, _, err := s.Append("topic", fmt.Appendf(nil, "%d", i))
		if err != nil || seq != uint64(i+1) {
			t.Fatalf("append %d: seq %d %v", i, seq, err)
		}
	}
	st, _ := s.OutboxStats()
	if st.Count != 10 || st.Dropped != 15 || st.NextSeq != 26 {
		t.Fatalf("stats %+v", st)
	}
	msgs, err := s.Pending(0, 100)
	if err != nil || len(msgs) != 10 || msgs[0].Seq != 16 || string(msgs[9].Payload) != "24" {
		t.Fatalf("pending %v %v", msgs, err)
	}
	for i := 1; i < len(msgs); i++ {
		if msgs[i].Seq != msgs[i-1].Seq+1 {
			t.Fatalf("out of order: %v", msgs)
		}
	}
	if err := s.Ack(16, 17, 17, 999); err != nil {
		t.Fatal(err)
	}
	if page, _ := s.Pending(0, 3); page[0].Seq != 18 {
		t.Fatalf("after ack %v", page)
	}
	if page, _ := s.Pending(20, 2); len(page) != 2 || page[0].Seq != 21 {
		t.Fatalf("paging %v", page)
	}
	s.Close()
	// Sequence numbers keep rising across restarts.
	s2, _ := mustOpen(t, dir, storage.Options{OutboxMaxCount: 10})
	if seq, _, _ := s2.Append("topic", nil); seq != 26 {
		t.Fatalf("seq after reopen %d", seq)
	}
	st, _ = s2.OutboxStats()
	if st.Count != 9 || st.Dropped != 15 {
		t.Fatalf("stats after reopen %+v", st)
	}
}

func TestOutboxByteBound(t *testing.T) {
	s, _ := mustOpen(t, t.TempDir(), storage.Options{OutboxMaxBytes: 4096})
	payload := bytes.Repeat([]byte("x"), 1000)
	total := 0
	for range 20 {
		_, d, err := s.Append("t", payload)
		if err != nil {
			t.Fatal(err)
		}
		total += d
	}
	st, _ := s.OutboxStats()
	if st.Bytes > 4096 || st.Count == 0 || int(st.Dropped) != total || st.Count+total != 20 {
		t.Fatalf("stats %+v, dropped %d", st, total)
	}
	// A message larger than the bound alone is still kept (never dropped
	// while it is being appended), and everything older goes.
	if _, _, err := s.Append("t", bytes.Repeat([]byte("y"), 8000)); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.OutboxStats(); st.Count != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDigestCache(t *testing.T) {
	s, _ := mustOpen(t, t.TempDir(), storage.Options{})
	if _, ok := s.LookupDigest("1:2:3:4:5"); ok {
		t.Fatal("empty cache hit")
	}
	if err := s.StoreDigest("1:2:3:4:5", "abc"); err != nil {
		t.Fatal(err)
	}
	if d, ok := s.LookupDigest("1:2:3:4:5"); !ok || d != "abc" {
		t.Fatalf("lookup %q %v", d, ok)
	}
}

func TestDigestsStoredTogether(t *testing.T) {
	s, _ := mustOpen(t, t.TempDir(), storage.Options{})
	if err := s.StoreDigests(map[string]string{"a": "1", "b": "2"}); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"a": "1", "b": "2"} {
		if d, ok := s.LookupDigest(k); !ok || d != want {
			t.Fatalf("%s: %q %v", k, d, ok)
		}
	}
}

func TestClosedStore(t *testing.T) {
	s, _, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, _, err := s.Append("t", nil); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

// Model versions: current/previous and rejected updates survive a
// reopen; rejections are bounded and forgiven by digest.
func TestVersionsRecord(t *testing.T) {
	dir := t.TempDir()
	s, _, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range storage.MaxRejections + 3 {
		if err := s.UpdateVersions("m", func(v *storage.Versions) {
			v.Reject(storage.Rejection{SHA256: fmt.Sprint("bad-", i), Code: "model_truncated"})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpdateVersions("m", func(v *storage.Versions) { v.Previous, v.Current = "old", "new"; v.Forgive("bad-10") }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, _, err = storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.Versions("m")
	if err != nil {
		t.Fatal(err)
	}
	if v.Current != "new" || v.Previous != "old" || len(v.Rejected) != storage.MaxRejections-1 {
		t.Fatalf("versions %+v", v)
	}
	if _, ok := v.RejectedAs("bad-9"); !ok {
		t.Fatal("the latest rejection was forgotten")
	}
	if _, ok := v.RejectedAs("bad-0"); ok {
		t.Fatal("rejections are not bounded")
	}
	if _, ok := v.RejectedAs("bad-10"); ok {
		t.Fatal("a forgiven rejection is still there")
	}
	if none, err := s.Versions("other"); err != nil || none.Current != "" {
		t.Fatalf("unknown model: %+v %v", none, err)
	}
}

// A device's read rate survives a reopen; another device has none.
func TestReadRatePersists(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir, storage.Options{})
	if _, ok := s.ReadRate("8:1"); ok {
		t.Fatal("a read rate before any was stored")
	}
	want := storage.ReadRate{BytesPerSec: 25e6, Bytes: 4 << 20, File: "m.tflite", Measured: time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)}
	if err := s.PutReadRate("8:1", want); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, _ = mustOpen(t, dir, storage.Options{})
	defer s.Close()
	if got, ok := s.ReadRate("8:1"); !ok || got != want {
		t.Fatalf("after reopen: %+v %v, want %+v", got, ok, want)
	}
	if _, ok := s.ReadRate("179:2"); ok {
		t.Fatal("another device has a read rate")
	}
}

// The last MaxStarts start durations are kept across reopens, oldest first.
func TestRecordStartKeepsTheLast(t *testing.T) {
	dir := t.TempDir()
	for i := range storage.MaxStarts + 5 {
		s, _ := mustOpen(t, dir, storage.Options{})
		kept, err := s.RecordStart(time.Duration(i+1) * time.Millisecond)
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := min(i+1, storage.MaxStarts); len(kept) != want || kept[len(kept)-1] != time.Duration(i+1)*time.Millisecond {
			t.Fatalf("start %d: kept %v", i, kept)
		}
	}
}
