package calibrate

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// runDelay grows when the process has more busy threads than cores: what
// verification uses to tell a busy moment from a slower board.
func TestRunDelaySeesBusyCores(t *testing.T) {
	if runDelay() == 0 && processCPU() > 100*time.Millisecond {
		t.Skip("this kernel keeps no run-queue delay (/proc/self/task/*/schedstat)")
	}
	threads := 2*runtime.NumCPU() + 1
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(threads))
	before := runDelay()
	var wg sync.WaitGroup
	for range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
			}
		}()
	}
	wg.Wait()
	if d := runDelay() - before; d < 50*time.Millisecond {
		t.Fatalf("%d spinning threads on %d cores for 300 ms waited only %v for a CPU", threads, runtime.NumCPU(), d)
	}
}
