package tflite

import (
	"encoding/binary"
	"errors"
	"io"
)

// A bounds-checked reader for the few parts of the TFLite flatbuffer schema
// this package needs without the runtime: the operator codes (to name custom
// ops) and the buffers (to tell a truncated file from a corrupted one). Slots
// are schema field numbers (vtable entry = 4 + 2*slot).
const (
	slotModelOperatorCodes = 1
	slotModelSubgraphs     = 2
	slotModelBuffers       = 4
	slotSubgraphTensors    = 0
	slotTensorIsVariable   = 5
	slotOpCodeDeprecated   = 0
	slotOpCodeCustom       = 1
	slotOpCodeBuiltin      = 3
	slotBufferData         = 0
	slotBufferOffset       = 1
	slotBufferSize         = 2

	builtinCustom = 32 // BuiltinOperator_CUSTOM
)

var errOutOfBounds = errors.New("flatbuffer reference past end of file")

type fbReader struct {
	r    io.ReaderAt
	size int64
	// b, when set, is the file's bytes (mapped): reads slice it rather
	// than copy. What read returns is only read, never kept or written.
	b []byte
}

func (f fbReader) read(off int64, n int) ([]byte, error) {
	if off < 0 || off+int64(n) > f.size {
		return nil, errOutOfBounds
	}
	if f.b != nil {
		if off+int64(n) > int64(len(f.b)) {
			return nil, errOutOfBounds
		}
		return f.b[off : off+int64(n) : off+int64(n)], nil
	}
	b := make([]byte, n)
	if _, err := f.r.ReadAt(b, off); err != nil {
		return nil, err
	}
	return b, nil
}

func (f fbReader) u16(off int64) (uint16, error) {
	b, err := f.read(off, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (f fbReader) u32(off int64) (uint32, error) {
	b, err := f.read(off, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (f fbReader) u64(off int64) (uint64, error) {
	b, err := f.read(off, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// deref follows the uoffset stored at pos.
func (f fbReader) deref(pos int64) (int64, error) {
	u, err := f.u32(pos)
	if err != nil {
		return 0, err
	}
	return pos + int64(u), nil
}

// field returns the position of a table's field, or 0 when it is absent.
func (f fbReader) field(table int64, slot int) (int64, error) {
	so, err := f.u32(table)
	if err != nil {
		return 0, err
	}
	vt := table - int64(int32(so))
	vtSize, err := f.u16(vt)
	if err != nil {
		return 0, err
	}
	entry := int64(4 + 2*slot)
	if entry+2 > int64(vtSize) {
		return 0, nil
	}
	fo, err := f.u16(vt + entry)
	if err != nil || fo == 0 {
		return 0, err
	}
	return table + int64(fo), nil
}

// vector returns the first element's position and the element count of the
// vector referenced by the field at pos.
func (f fbReader) vector(pos int64, elemSize int64) (int64, int64, error) {
	v, err := f.deref(pos)
	if err != nil {
		return 0, 0, err
	}
	n, err := f.u32(v)
	if err != nil {
		return 0, 0, err
	}
	if v+4+int64(n)*elemSize > f.size {
		return 0, 0, errOutOfBounds
	}
	return v + 4, int64(n), nil
}

func (f fbReader) tables(table int64, slot int) ([]int64, error) {
	pos, err := f.field(table, slot)
	if err != nil || pos == 0 {
		return nil, err
	}
	start, n, err := f.vector(pos, 4)
	if err != nil {
		return nil, err
	}
	out := make([]int64, 0, n)
	for i := int64(0); i < n; i++ {
		t, err := f.deref(start + 4*i)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// maxCustomOpName bounds a custom operator's name; real ones are short
// ("TFLite_Detection_PostProcess", "edgetpu-custom-op").
const maxCustomOpName = 256

var errCustomOpName = errors.New("custom operator name longer than 256 bytes")

// customOps lists the distinct custom operator names a model uses. Every
// operator code may point at the same name: names are read once each and
// bounded, so a crafted file cannot make the scan quadratic (fuzzing found
// 64 KiB files that made it allocate gigabytes).
func (f fbReader) customOps() ([]string, error) {
	root, err := f.deref(0)
	if err != nil {
		return nil, err
	}
	codes, err := f.tables(root, slotModelOperatorCodes)
	if err != nil {
		return nil, err
	}
	var names []string
	seen := map[int64]bool{}   // name vectors already read
	known := map[string]bool{} // names already listed
	for _, oc := range codes {
		code, err := f.builtinCode(oc)
		if err != nil {
			return nil, err
		}
		if code != builtinCustom {
			continue
		}
		pos, err := f.field(oc, slotOpCodeCustom)
		if err != nil {
			return nil, err
		}
		if pos == 0 {
			if !known[""] {
				names = append(names, "")
			}
			known[""] = true
			continue
		}
		start, n, err := f.vector(pos, 1)
		if err != nil {
			return nil, err
		}
		if n > maxCustomOpName {
			return nil, errCustomOpName
		}
		if seen[start] {
			continue
		}
		seen[start] = true
		b, err := f.read(start, int(n))
		if err != nil {
			return nil, err
		}
		if name := string(b); !known[name] {
			known[name] = true
			names = append(names, name)
		}
	}
	return names, nil
}

// builtinCode reads an OperatorCode's operator, honouring the schema's move
// from the int8 deprecated_builtin_code to the int32 builtin_code.
func (f fbReader) builtinCode(oc int64) (int32, error) {
	var code int32
	if pos, err := f.field(oc, slotOpCodeBuiltin); err != nil {
		return 0, err
	} else if pos != 0 {
		u, err := f.u32(pos)
		if err != nil {
			return 0, err
		}
		code = int32(u)
	}
	if pos, err := f.field(oc, slotOpCodeDeprecated); err != nil {
		return 0, err
	} else if pos != 0 {
		b, err := f.read(pos, 1)
		if err != nil {
			return 0, err
		}
		if d := int32(int8(b[0])); d > code {
			code = d
		}
	}
	return code, nil
}

// checkBuffers walks every weight buffer and reports errOutOfBounds when one
// lies past the end of the file, the signature of a truncated download.
func (f fbReader) checkBuffers() error {
	root, err := f.deref(0)
	if err != nil {
		return err
	}
	bufs, err := f.tables(root, slotModelBuffers)
	if err != nil {
		return err
	}
	for _, b := range bufs {
		if pos, err := f.field(b, slotBufferData); err != nil {
			return err
		} else if pos != 0 {
			if _, _, err := f.vector(pos, 1); err != nil {
				return err
			}
		}
		// Models over 2 GiB keep weights after the flatbuffer (offset/size).
		offPos, err := f.field(b, slotBufferOffset)
		if err != nil {
			return err
		}
		sizePos, err := f.field(b, slotBufferSize)
		if err != nil {
			return err
		}
		if offPos == 0 || sizePos == 0 {
			continue
		}
		off, err := f.u64(offPos)
		if err != nil {
			return err
		}
		size, err := f.u64(sizePos)
		if err != nil {
			return err
		}
		if off > 1 && off+size > uint64(f.size) {
			return errOutOfBounds
		}
	}
	return nil
}

// hasVariableTensors reports whether any tensor of any subgraph is a
// variable (state kept between invokes, as an LSTM's).
func (f fbReader) hasVariableTensors() (bool, error) {
	root, err := f.deref(0)
	if err != nil {
		return false, err
	}
	subgraphs, err := f.tables(root, slotModelSubgraphs)
	if err != nil {
		return false, err
	}
	for _, sg := range subgraphs {
		tensors, err := f.tables(sg, slotSubgraphTensors)
		if err != nil {
			return false, err
		}
		for _, t := range tensors {
			pos, err := f.field(t, slotTensorIsVariable)
			if err != nil {
				return false, err
			}
			if pos == 0 {
				continue
			}
			b, err := f.read(pos, 1)
			if err != nil {
				return false, err
			}
			if b[0] != 0 {
				return true, nil
			}
		}
	}
	return false, nil
}
