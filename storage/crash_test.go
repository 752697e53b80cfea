package storage_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/storage"
)

// The test binary doubles as a child process that writes to a store, so the
// tests can kill it mid-write or starve it of disk.
func TestMain(m *testing.M) {
	switch os.Getenv("EDGE_AGENT_STORAGE_CHILD") {
	case "writer":
		base, _ := strconv.Atoi(os.Getenv("EDGE_AGENT_STORAGE_BASE"))
		os.Exit(childWriter(os.Args[len(os.Args)-1], base))
	case "fsize":
		os.Exit(childDiskFull(os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// childWriter writes forever, printing each record after its commit. Its
// counter starts at base, so values only grow across runs.
func childWriter(dir string, base int) int {
	s, _, err := storage.Open(dir, storage.Options{OutboxMaxCount: 1 << 20, OutboxMaxBytes: 1 << 40})
	if err != nil {
		fmt.Println("open error:", err)
		return 1
	}
	for i := base; ; i++ {
		switch i % 3 {
		case 0, 1:
			seq, _, err := s.Append("events", fmt.Appendf(nil, "event-%d", i))
			if err != nil {
				fmt.Println("error:", err)
				return 1
			}
			fmt.Printf("outbox %d %d\n", seq, i)
		case 2:
			id := fmt.Sprintf("model-%d", i%7)
			v := storage.Validity{Model: id, Runtime: "r", Hardware: "h", Options: "o"}
			if err := s.PutCalibration(id, storage.Calibration{Validity: v, Threads: i}); err != nil {
				fmt.Println("error:", err)
				return 1
			}
			fmt.Printf("calib %s %d\n", id, i)
		}
	}
}

// TestProcessDeathSafetyUnderSIGKILL kills a writer at random points and
// reopens: every commit it printed is there and the file is never judged
// corrupt. It proves safety against the process dying, not against power
// loss: the kernel's page cache survives SIGKILL, so a missing fsync would
// pass here. A power-loss test needs a layer that drops unsynced writes
// (dm-flakey or dm-log-writes, or a FUSE file system); this machine's kernel
// has no device-mapper (/dev/mapper/control: no such device) and we did not
// take on a FUSE dependency for it; bbolt's own fsync discipline
// (fdatasync before and after the meta page) is what we rely on.
func TestProcessDeathSafetyUnderSIGKILL(t *testing.T) {
	runs := 50
	if testing.Short() {
		runs = 5
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(42))
	committedOutbox := map[uint64]string{} // seq → payload
	lastCalib := map[string]int{}          // model id → last committed i
	for run := range runs {
		cmd := exec.Command(os.Args[0], "-test.run=^$", dir)
		cmd.Env = append(os.Environ(), "EDGE_AGENT_STORAGE_CHILD=writer", fmt.Sprintf("EDGE_AGENT_STORAGE_BASE=%d", run*1_000_000))
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// A random point: during start-up, open, or mid-write.
		time.Sleep(time.Duration(rng.Intn(150)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		sc := bufio.NewScanner(&out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "outbox":
				seq, _ := strconv.ParseUint(f[1], 10, 64)
				committedOutbox[seq] = "event-" + f[2]
			case len(f) == 3 && f[0] == "calib":
				i, _ := strconv.Atoi(f[2])
				lastCalib[f[1]] = i
			default:
				t.Fatalf("run %d: child said %q", run, sc.Text())
			}
		}

		// Open runs the full verification (record CRCs and tx.Check).
		s, rep, err := storage.Open(dir, storage.Options{})
		if err != nil {
			t.Fatalf("run %d: open after SIGKILL: %v", run, err)
		}
		if rep.Corruption != nil {
			t.Fatalf("run %d: store judged corrupt after SIGKILL: %+v", run, rep.Corruption)
		}
		msgs, err := s.Pending(0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		have := map[uint64]string{}
		for _, m := range msgs {
			have[m.Seq] = string(m.Payload)
		}
		for seq, payload := range committedOutbox {
			if have[seq] != payload {
				t.Fatalf("run %d: committed outbox seq %d = %q, have %q", run, seq, payload, have[seq])
			}
		}
		for id, i := range lastCalib {
			v := storage.Validity{Model: id, Runtime: "r", Hardware: "h", Options: "o"}
			cal, look, err := s.Calibration(id, v)
			// A later write may have landed unreported before the kill.
			if err != nil || look.Status != storage.Restored || cal.Threads < i {
				t.Fatalf("run %d: calibration %s: %+v %+v %v, committed %d", run, id, cal, look, err, i)
			}
		}
		s.Close()
	}
	t.Logf("%d kills, %d committed outbox messages and %d calibrations all present", runs, len(committedOutbox), len(lastCalib))
	if len(committedOutbox) == 0 {
		t.Fatal("the child never committed anything: the test proved nothing")
	}
}

// childDiskFull writes until the file-size limit stops it: what a full
// disk looks like to bbolt. It must fail with errors, not panic.
func childDiskFull(dir string) int {
	signal.Ignore(syscall.SIGXFSZ) // get EFBIG from write, not a signal
	lim := syscall.Rlimit{Cur: 256 << 10, Max: 256 << 10}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		return 1
	}
	s, _, err := storage.Open(dir, storage.Options{OutboxMaxCount: 1 << 20, OutboxMaxBytes: 1 << 40})
	if err != nil {
		fmt.Println("open error:", err)
		return 1
	}
	payload := bytes.Repeat([]byte("z"), 4000)
	for i := 0; i < 10000; i++ {
		seq, _, err := s.Append("big", payload)
		if err != nil {
			fmt.Println("write error:", err)
			// Still usable for reading, and closes cleanly.
			if _, err := s.OutboxStats(); err != nil {
				fmt.Println("stats after error:", err)
				return 1
			}
			if err := s.Close(); err != nil {
				fmt.Println("close:", err)
			}
			return 0
		}
		fmt.Printf("outbox %d\n", seq)
	}
	fmt.Println("never hit the limit")
	return 1
}

func TestDiskFullIsAnError(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$", dir)
	cmd.Env = append(os.Environ(), "EDGE_AGENT_STORAGE_CHILD=fsize")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	text := string(out)
	if cmd.ProcessState.ExitCode() != 0 || !strings.Contains(text, "write error:") || strings.Contains(text, "panic") {
		t.Fatalf("child exit %d:\n%s", cmd.ProcessState.ExitCode(), tail(text))
	}
	committed := strings.Count(text, "outbox ")
	s, rep, err := storage.Open(dir, storage.Options{})
	if err != nil || rep.Corruption != nil {
		t.Fatalf("reopen after disk full: %v %+v", err, rep.Corruption)
	}
	defer s.Close()
	st, _ := s.OutboxStats()
	if st.Count < committed || committed == 0 {
		t.Fatalf("committed %d, present %d", committed, st.Count)
	}
	t.Logf("%d committed before the limit; error: %s", committed, lastLine(text, "write error:"))
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

func lastLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
