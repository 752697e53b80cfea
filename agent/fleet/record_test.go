package fleet_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent/fleet"
	"github.com/edge-agent/edge-agent/storage"
)

var key = storage.Validity{Model: "ab12", Runtime: "2.14.1", Hardware: "f00d", Options: "threads=auto,delegate=cpu"}

func record() fleet.Record {
	cal := storage.Calibration{Validity: key, Threads: 2, Tried: []storage.ThreadResult{{Threads: 1, SteadyMs: 2}, {Threads: 2, SteadyMs: 1.2}},
		Stages:    storage.Stages{Map: time.Microsecond, Interpreter: time.Millisecond, Allocate: 2 * time.Millisecond, FirstInvoke: 3 * time.Millisecond, Steady: time.Millisecond},
		HeapBytes: 1 << 20, MappedBytes: 500_000, Runs: 3, Spread: 0.1, At: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	return fleet.FromCalibration(cal, "dev1", fleet.Delegate{Chosen: "cpu"})
}

func local() fleet.Local {
	return fleet.Local{Key: key, Cores: 4, Mapped: 500_000, Now: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)}
}

func TestRecordRoundTripAndCheck(t *testing.T) {
	b, err := record().Encode()
	if err != nil {
		t.Fatal(err)
	}
	r, err := fleet.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(local()); err != nil {
		t.Fatalf("a sound record refused: %v", err)
	}
	cal := r.Calibration()
	if cal.Source != storage.SourceFleet || cal.From != "dev1" || cal.Verified || cal.Threads != 2 || cal.Runs != 3 || cal.Validity != key {
		t.Fatalf("calibration from the record: %+v", cal)
	}
}

func TestDecodeIsStrict(t *testing.T) {
	good, _ := record().Encode()
	for name, payload := range map[string][]byte{
		"unknown field":  bytes.Replace(good, []byte(`"samples"`), []byte(`"evil":1,"samples"`), 1),
		"trailing data":  append(append([]byte{}, good...), []byte(` {}`)...),
		"not json":       []byte("threads=4"),
		"too large":      append(append([]byte{}, good[:len(good)-1]...), []byte(`,"x":"`+strings.Repeat("a", fleet.MaxBytes)+`"}`)...),
		"wrong type":     bytes.Replace(good, []byte(`"samples":3`), []byte(`"samples":"3"`), 1),
		"schema missing": bytes.Replace(good, []byte(`"schema":1,`), nil, 1),
	} {
		if _, err := fleet.Decode(payload); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	v2 := bytes.Replace(good, []byte(`"schema":1`), []byte(`"schema":2`), 1)
	if _, err := fleet.Decode(v2); !errors.Is(err, fleet.ErrUnknownSchema) {
		t.Errorf("another schema version: %v, want ErrUnknownSchema", err)
	}
}

func TestCheckRefusesWhatCannotBe(t *testing.T) {
	for name, mutate := range map[string]func(*fleet.Record){
		"other hardware":      func(r *fleet.Record) { r.Validity.Hardware = "beef" },
		"other runtime":       func(r *fleet.Record) { r.Validity.Runtime = "2.16.0" },
		"other model":         func(r *fleet.Record) { r.Validity.Model = "cd34" },
		"other options":       func(r *fleet.Record) { r.Validity.Options = "threads=4,delegate=cpu" },
		"more threads":        func(r *fleet.Record) { r.Facts.Threads = 64 },
		"no threads":          func(r *fleet.Record) { r.Facts.Threads = 0 },
		"footprint too small": func(r *fleet.Record) { r.Facts.MappedBytes = 4096 },
		"negative heap":       func(r *fleet.Record) { r.Facts.HeapBytes = -1 },
		"zero steady":         func(r *fleet.Record) { r.Facts.Stages.Steady = 0 },
		"negative stage":      func(r *fleet.Record) { r.Facts.Stages.Allocate = -time.Millisecond },
		"hours-long stage":    func(r *fleet.Record) { r.Facts.Stages.FirstInvoke = 3 * time.Hour },
		"no samples":          func(r *fleet.Record) { r.Samples = 0 },
		"tried 99 threads":    func(r *fleet.Record) { r.Facts.Tried[0].Threads = 99 },
		"from the future":     func(r *fleet.Record) { r.At = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) },
		"negative spread":     func(r *fleet.Record) { r.Spread = -1 },
	} {
		r := record()
		r.Facts.Tried = append([]storage.ThreadResult{}, r.Facts.Tried...)
		mutate(&r)
		if err := r.Check(local()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestBetterIsMoreSamplesThenNewer(t *testing.T) {
	a, b := record(), record()
	b.Samples = 5
	if fleet.Better(a, b) || !fleet.Better(b, a) {
		t.Error("more samples must win")
	}
	b.Samples = a.Samples
	b.At = a.At.Add(time.Minute)
	if fleet.Better(a, b) || !fleet.Better(b, a) {
		t.Error("with as many samples, the newer must win")
	}
	if fleet.Better(a, a) {
		t.Error("a record is not better than itself")
	}
}

func TestTopicsAreSingleLevels(t *testing.T) {
	v := storage.Validity{Model: "ab", Runtime: "2.14/1+x", Hardware: "f#", Options: "delegate=edgetpu@/usr/lib/libedgetpu.so.1"}
	topic := fleet.Topic("edge", v)
	if n := strings.Count(topic, "/"); n != 5 || strings.ContainsAny(topic, "+#") {
		t.Fatalf("topic %q: want 6 levels, no wildcards", topic)
	}
	if f := fleet.Filter("edge", v.Hardware, v.Runtime); !strings.HasPrefix(topic, strings.TrimSuffix(f, "+/+")) {
		t.Fatalf("filter %q does not cover %q", f, topic)
	}
}

func TestViewKeepsTheBestRecordPerTopic(t *testing.T) {
	v := fleet.NewView("edge", 2)
	r := record()
	topic := v.Topic(key)
	enc := func(r fleet.Record) []byte { b, _ := r.Encode(); return b }
	if err := v.Offer(topic, enc(r)); err != nil {
		t.Fatal(err)
	}
	fewer := r
	fewer.Samples, fewer.Device = 1, "dev2"
	if err := v.Offer(topic, enc(fewer)); err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Get(key); got.Device != "dev1" {
		t.Fatalf("a record with fewer samples replaced one with more: %s", got.Device)
	}
	if err := v.Offer("edge/fleet/other/2.14.1/ab12/x", enc(r)); err == nil {
		t.Fatal("a record on a topic not its key's was taken")
	}
	other := r
	other.Validity.Model = "cd34"
	if err := v.Offer(v.Topic(other.Validity), enc(other)); err != nil {
		t.Fatal(err)
	}
	third := r
	third.Validity.Model = "ef56"
	if err := v.Offer(v.Topic(third.Validity), enc(third)); !errors.Is(err, fleet.ErrFull) {
		t.Fatalf("a third record in a view of 2: %v", err)
	}
	if err := v.Offer(topic, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := v.Get(key); ok {
		t.Fatal("a cleared record is still held")
	}
}
