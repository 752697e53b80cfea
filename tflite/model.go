package tflite

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	tfl "github.com/tphakala/go-tflite"
)

// tfliteIdentifier is the flatbuffer file identifier of TFLite models.
const tfliteIdentifier = "TFL3"

// edgeTPUOp is the custom op the Edge TPU compiler replaces a graph with.
const edgeTPUOp = "edgetpu-custom-op"

// Model is a TFLite model memory-mapped from its file (the runtime maps it
// read-only and shared, so its pages live in the page cache, not the Go or C
// heap). One Model serves any number of interpreters; close it after them.
type Model struct {
	Path string
	Size int64

	m    *tfl.Model
	live atomic.Int32 // interpreters created on m and not yet closed

	opsOnce sync.Once
	ops     []string
	opsErr  error
}

// LoadModel maps the model at path. Files the runtime would refuse are
// classified first so each failure has its own Kind.
func LoadModel(path string) (*Model, error) {
	size, err := precheck(path)
	if err != nil {
		return nil, err
	}
	m := tfl.NewModelFromFile(path)
	if m == nil {
		return nil, classifyLoadFailure(path, size)
	}
	return &Model{Path: path, Size: size, m: m}, nil
}

// precheck opens the file and checks the flatbuffer identifier, returning the
// file size.
func precheck(path string) (int64, error) {
	fail := func(k *Kind, detail string, err error) (int64, error) {
		return 0, &Error{Op: "load model", Path: path, Kind: k, Detail: detail, wrapped: err}
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail(ErrModelNotFound, "", err)
	case err != nil:
		return fail(ErrModelUnreadable, err.Error(), err)
	case !fi.Mode().IsRegular():
		return fail(ErrModelNotRegular, fmt.Sprintf("file mode %v", fi.Mode().Type()), nil)
	case fi.Size() == 0:
		return fail(ErrModelEmpty, "", nil)
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(ErrModelUnreadable, err.Error(), err)
	}
	defer f.Close()
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(f, hdr); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return fail(ErrModelNotTFLite, fmt.Sprintf("only %d bytes", fi.Size()), nil)
		}
		return fail(ErrModelUnreadable, err.Error(), err)
	}
	if string(hdr[4:8]) != tfliteIdentifier {
		return fail(ErrModelNotTFLite, fmt.Sprintf("identifier %q", hdr[4:8]), nil)
	}
	return fi.Size(), nil
}

// classifyLoadFailure tells a truncated file (weights referenced past the
// end) from an otherwise invalid one, keeping the runtime's own message.
func classifyLoadFailure(path string, size int64) error {
	e := &Error{Op: "load model", Path: path, Kind: ErrModelInvalid, Detail: modelLoadError(path)}
	f, err := os.Open(path)
	if err != nil {
		return e
	}
	defer f.Close()
	fb := fbReader{r: f, size: size}
	// A root table outside the file means the header itself is damaged.
	if root, err := fb.deref(0); err != nil || root+4 > size {
		return e
	}
	if err := fb.checkBuffers(); errors.Is(err, errOutOfBounds) {
		e.Kind = ErrModelTruncated
		if e.Detail == "" {
			e.Detail = errOutOfBounds.Error()
		}
	}
	return e
}

// CustomOps lists the custom operators the model uses, read from the file.
func (m *Model) CustomOps() ([]string, error) {
	m.opsOnce.Do(func() {
		f, err := os.Open(m.Path)
		if err != nil {
			m.opsErr = err
			return
		}
		defer f.Close()
		m.ops, m.opsErr = fbReader{r: f, size: m.Size}.customOps()
	})
	return m.ops, m.opsErr
}

// NeedsEdgeTPU reports whether the model was compiled for the Edge TPU.
func (m *Model) NeedsEdgeTPU() bool {
	ops, _ := m.CustomOps()
	return slices.Contains(ops, edgeTPUOp)
}

// Close unmaps the model. It fails with ErrBusy while interpreters created
// on it are still open, since they read the mapped weights.
func (m *Model) Close() error {
	if m == nil || m.m == nil {
		return nil
	}
	if n := m.live.Load(); n > 0 {
		return &Error{Op: "close model", Path: m.Path, Kind: ErrBusy, Detail: fmt.Sprintf("%d interpreters open", n)}
	}
	p, err := detachFn(m.m, "m")
	if err != nil {
		leaked(err)
		return err
	}
	freeModel(p)
	m.m = nil
	return nil
}
