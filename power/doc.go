// Package power tells the agent what the device can afford right now: AC
// or battery and its charge, thermal zones, CPU load and memory; when it
// woke up; and, through the energy policy, how much prewarming that allows.
//
// sysfs is read like prometheus/procfs reads it: below an injectable root
// (tests use real-format trees in testdata/), one bounded read per file
// (some drivers answer EAGAIN forever to a read-until-EOF), units as the
// kernel writes them (millidegree °C, µV, µA, µW, µWh, µAh), optional
// values as pointers, and a missing file or directory is "no data".
package power
