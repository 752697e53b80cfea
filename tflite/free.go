package tflite

import (
	"fmt"
	"unsafe"

	tfl "github.com/tphakala/go-tflite"
)

// Free frees go-tflite objects made outside this package (tfl.NewModel,
// tfl.NewInterpreterOptions, tfl.NewInterpreter) now instead of whenever the
// garbage collector runs their cleanups; a model made by tfl.NewModel is
// freed with its C copy of the bytes. Pass an interpreter before the options
// and model it uses. Code that loads through go-tflite directly (the bench's
// naive baseline) uses it to free as explicitly as the pool does.
//
// When an object cannot be detached (a go-tflite layout change), it and
// everything after it are left allocated, counted in Leaked, rather than
// freed under a live interpreter; the error says which.
func Free(objs ...any) error {
	for i, o := range objs {
		var err error
		switch v := o.(type) {
		case *tfl.Interpreter:
			err = freeWith(v, "i", freeInterpreter)
		case *tfl.InterpreterOptions:
			err = freeWith(v, "o", freeOptions)
		case *tfl.Model:
			if v != nil {
				err = freeHeapModel(v)
			}
		default:
			return fmt.Errorf("free: %w: %T is not a go-tflite object", ErrBinding, o)
		}
		if err != nil {
			for range objs[i:] {
				leaked(err)
			}
			return fmt.Errorf("free: %w", err)
		}
	}
	return nil
}

func freeWith[T any](obj *T, field string, free func(unsafe.Pointer)) error {
	if obj == nil {
		return nil
	}
	p, err := detachFn(obj, field)
	if err != nil {
		return err
	}
	free(p)
	return nil
}

// freeHeapModel frees a model made by tfl.NewModel or tfl.NewModelFromFile
// and, for the former, the C copy of its bytes.
func freeHeapModel(m *tfl.Model) error {
	ptr, cleanup, err := bindingFields(m, "m")
	if err != nil {
		return err
	}
	buf, _, err := bindingFields(m, "buf")
	if err != nil {
		return err
	}
	cleanup.Stop()
	freeModel(*ptr)
	*ptr = nil
	if buf != nil && *buf != nil {
		freeC(*buf)
		*buf = nil
	}
	return nil
}
