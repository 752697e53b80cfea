package tflite

import (
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"
)

// loader is what the pool needs from the runtime: read a model file's
// facts, map it, warm an interpreter on it, and read the C heap. The real
// one (runtimeLoader) is the staged load; the pool's unit tests use a fake,
// so budget, leases, waits and eviction order are tested without the
// runtime and at any size.
type loader interface {
	// inspect reads the file's size, whether it has variable tensors and
	// the work of an invoke (multiply-accumulates, estimated).
	inspect(path string) (fileInfo, error)
	// nonResident is how many bytes of the file are not in the page cache
	// (a load reads them from storage).
	nonResident(path string) int64
	// mapModel maps the model (reading it through first with pageIn).
	mapModel(path string, pageIn bool) (m mapping, mapTime, pageInTime time.Duration, err error)
	// warm creates, allocates and (unless w says otherwise) invokes an
	// interpreter on m, returning the heap it holds.
	warm(m mapping, o Options, w WarmOptions) (instance, Stages, int64, error)
	// heapInUse is the C heap in use now; releaseHeap gives freed heap
	// back to the kernel.
	heapInUse() int64
	releaseHeap()
}

// mapping is a mapped model: *Model.
type mapping interface {
	mappedBytes() int64
	Close() error
}

// instance is a warm interpreter: *Interpreter.
type instance interface {
	Invoke() error
	ResetVariables() error
	Delegates() []string
	Close()
}

func (m *Model) mappedBytes() int64 { return m.Size }

// runtimeLoader loads through the TFLite runtime.
type runtimeLoader struct{}

// fileInfo is what registering a model reads from its file.
type fileInfo struct {
	size int64
	vars bool
	work int64
}

func (runtimeLoader) inspect(path string) (fileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		_, perr := precheck(path)
		return fileInfo{}, perr
	}
	vars, work := scanFile(path, fi.Size())
	return fileInfo{size: fi.Size(), vars: vars, work: work}, nil
}

func (runtimeLoader) nonResident(path string) int64 {
	res, size, err := Residency(path)
	if err != nil {
		return 0 // the load reports what is wrong with the file
	}
	return size - res
}

func (runtimeLoader) mapModel(path string, pageIn bool) (mapping, time.Duration, time.Duration, error) {
	t := time.Now()
	m, err := LoadModel(path)
	if err != nil {
		return nil, 0, 0, err
	}
	mapTime := time.Since(t)
	if !pageIn {
		return m, mapTime, 0, nil
	}
	t = time.Now()
	if err := PageIn(path); err != nil {
		_ = m.Close()
		return nil, 0, 0, err
	}
	return m, mapTime, time.Since(t), nil
}

func (runtimeLoader) warm(m mapping, o Options, w WarmOptions) (instance, Stages, int64, error) {
	it, st, heap, err := Warm(m.(*Model), o, w)
	if err != nil {
		return nil, st, 0, err // not a typed nil
	}
	return it, st, heap, nil
}

func (runtimeLoader) heapInUse() int64 { return heapInUse() }
func (runtimeLoader) releaseHeap()     { ReleaseHeap() }

// scanFile reads from the model file at path whether it has variable
// tensors and the work of an invoke; an unreadable file has neither (its
// load fails on its own). It scans a read-only mapping: the scan follows
// thousands of small offsets, and a read syscall each cost 8-9 ms on
// mobilenet_v2 (against well under 1 ms mapped), on the first request's
// path when nothing about the file is known yet.
func scanFile(path string, size int64) (vars bool, work int64) {
	f, err := os.Open(path)
	if err != nil {
		return false, 0
	}
	defer f.Close()
	r := fbReader{r: f, size: size}
	if data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED); err == nil {
		defer func() { _ = unix.Munmap(data) }()
		r.b = data
		// A file cut short while mapped faults on its missing pages: the
		// scan then knows nothing, rather than the process dying.
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if v := recover(); v != nil {
				if _, fault := v.(interface{ Addr() uintptr }); !fault {
					panic(v)
				}
				vars, work = false, 0
			}
		}()
	}
	vars, _ = r.hasVariableTensors()
	work, _ = r.work()
	return vars, work
}
