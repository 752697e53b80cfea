package fleet_test

import (
	"testing"

	"github.com/edge-agent/edge-agent/agent/fleet"
)

// A sample count no calibration can reach is impossible: refused by Check
// and by the view, so a forged one cannot win every merge.
func TestSamplesAreBounded(t *testing.T) {
	r := record()
	r.Samples = fleet.MaxSamples
	if err := r.Check(local()); err != nil {
		t.Fatalf("%d samples refused: %v", fleet.MaxSamples, err)
	}
	r.Samples = 1 << 30
	if err := r.Check(local()); err == nil {
		t.Fatalf("%d samples accepted", r.Samples)
	}
	v := fleet.NewView("edge", 4)
	b, _ := r.Encode()
	if err := v.Offer(v.Topic(key), b); err == nil {
		t.Fatal("the view took a record with a forged sample count")
	}
	if _, ok := v.Get(key); ok {
		t.Fatal("the view holds a record with a forged sample count")
	}
}

// A record this device's own measurement contradicts is superseded: once
// refuted, the view drops it, does not take it back when the broker
// delivers it again, and takes the next record for the key whatever its
// sample count (this device's own, published over it).
func TestARefutedRecordIsSuperseded(t *testing.T) {
	v := fleet.NewView("edge", 4)
	topic := v.Topic(key)
	enc := func(r fleet.Record) []byte { b, _ := r.Encode(); return b }
	forged := record()
	forged.Device, forged.Samples = "forger", fleet.MaxSamples
	forged.Facts.HeapBytes *= 8
	if err := v.Offer(topic, enc(forged)); err != nil {
		t.Fatal(err)
	}
	here := record().Calibration() // this device measured 1 MiB
	if why := forged.Contradicts(here, 1); why == "" {
		t.Fatal("a record 8× this device's heap is not contradicted")
	}
	if why := record().Contradicts(here, 1); why != "" {
		t.Fatalf("a record agreeing with this device is contradicted: %s", why)
	}
	own := record()
	own.Device = "here"
	if err := v.Offer(topic, enc(own)); err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Get(key); got.Device != "forger" {
		t.Fatalf("before refuting: held %q, want the forger's (more samples)", got.Device)
	}
	v.Refute(forged)
	if _, ok := v.Get(key); ok {
		t.Fatal("a refuted record is still held")
	}
	if err := v.Offer(topic, enc(forged)); err != nil {
		t.Fatal(err)
	}
	if _, ok := v.Get(key); ok {
		t.Fatal("a refuted record was taken back")
	}
	if err := v.Offer(topic, enc(own)); err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Get(key); got.Device != "here" {
		t.Fatalf("after refuting: held %q, want this device's record", got.Device)
	}
}
