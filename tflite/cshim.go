package tflite

/*
#cgo LDFLAGS: -ltensorflowlite_c
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <malloc.h>
#include <dlfcn.h>
#include <tensorflow/lite/c/c_api.h>
#include <tensorflow/lite/c/common.h>
#include <tensorflow/lite/delegates/external/external_delegate.h>

// edge_errlog collects the runtime's messages in C memory. Reporting must not
// call back into Go: go-tflite declares AllocateTensors and Invoke
// "#cgo nocallback", and the runtime reports from inside them.
typedef struct {
	size_t len;
	char buf[2048];
} edge_errlog;

static void edge_report(void* user, const char* fmt, va_list args) {
	edge_errlog* l = (edge_errlog*)user;
	size_t room = sizeof(l->buf) - l->len;
	if (room < 3) return;
	int n = vsnprintf(l->buf + l->len, room - 1, fmt, args);
	if (n < 0) return;
	size_t w = (size_t)n < room - 2 ? (size_t)n : room - 2;
	l->len += w;
	l->buf[l->len++] = '\n';
	l->buf[l->len] = 0;
}

static edge_errlog* edge_errlog_new(void) { return (edge_errlog*)calloc(1, sizeof(edge_errlog)); }

static void edge_set_reporter(void* opts, edge_errlog* l) {
	TfLiteInterpreterOptionsSetErrorReporter((TfLiteInterpreterOptions*)opts, edge_report, l);
}

static TfLiteModel* edge_model_from_file(const char* path, edge_errlog* l) {
	return TfLiteModelCreateFromFileWithErrorReporter(path, edge_report, l);
}

static void edge_model_delete(void* m) { TfLiteModelDelete((TfLiteModel*)m); }
static void edge_options_delete(void* o) { TfLiteInterpreterOptionsDelete((TfLiteInterpreterOptions*)o); }
static void edge_interpreter_delete(void* i) { TfLiteInterpreterDelete((TfLiteInterpreter*)i); }
static void edge_external_delegate_delete(void* d) { TfLiteExternalDelegateDelete((TfLiteDelegate*)d); }

// edge_plugin_check loads lib as TFLite's external delegate loader would and
// checks it is a delegate plugin. TfLiteExternalDelegateCreate does not fail
// on a missing library: it returns a delegate without functions, and the
// interpreter then jumps to NULL. Returns NULL or the reason (static).
static const char* edge_plugin_check(const char* lib) {
	dlerror();
	void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char* e = dlerror();
		return e ? e : "dlopen failed";
	}
	const char* reason = NULL;
	if (dlsym(h, "tflite_plugin_create_delegate") == NULL || dlsym(h, "tflite_plugin_destroy_delegate") == NULL) {
		reason = "not a TFLite delegate plugin (tflite_plugin_create_delegate/tflite_plugin_destroy_delegate missing)";
	}
	dlclose(h);
	return reason;
}

// go-tflite's delegates/external crashes in cgo's pointer checks (v0.2.1),
// so external delegates are created here. Returns NULL when an option is
// refused or the plugin created no delegate.
static void* edge_external_delegate_new(const char* lib, int n, char** keys, char** values) {
	TfLiteExternalDelegateOptions o = TfLiteExternalDelegateOptionsDefault(lib);
	for (int i = 0; i < n; i++) {
		if (TfLiteExternalDelegateOptionsInsert(&o, keys[i], values[i]) != kTfLiteOk) return NULL;
	}
	TfLiteDelegate* d = TfLiteExternalDelegateCreate(&o);
	if (d != NULL && d->Prepare == NULL && d->opaque_delegate_builder == NULL) {
		TfLiteExternalDelegateDelete(d);
		return NULL;
	}
	return d;
}

static void edge_options_add_delegate(void* opts, void* d) {
	TfLiteInterpreterOptionsAddDelegate((TfLiteInterpreterOptions*)opts, (TfLiteDelegate*)d);
}

// Bytes the C heap holds right now, in every arena, mmapped chunks included.
static size_t edge_heap_in_use(void) {
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// RuntimeVersion is the linked TFLite runtime's own version string.
func RuntimeVersion() string { return C.GoString(C.TfLiteVersion()) }

// errLog is a C-allocated message buffer handed to the runtime as the
// reporter's user data. Free it only after the object reporting into it.
type errLog struct{ c *C.edge_errlog }

func newErrLog() errLog { return errLog{c: C.edge_errlog_new()} }

// take returns and clears what the runtime reported since the last take.
func (l errLog) take() string {
	if l.c == nil || l.c.len == 0 {
		return ""
	}
	s := C.GoStringN(&l.c.buf[0], C.int(l.c.len))
	l.c.len = 0
	l.c.buf[0] = 0
	return strings.TrimSpace(s)
}

func (l errLog) free() {
	if l.c != nil {
		C.free(unsafe.Pointer(l.c))
	}
}

// modelLoadError reloads path with a capturing reporter to obtain the
// runtime's reason; only called after go-tflite returned nil.
func modelLoadError(path string) string {
	l := newErrLog()
	defer l.free()
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	if m := C.edge_model_from_file(cpath, l.c); m != nil {
		C.edge_model_delete(unsafe.Pointer(m))
	}
	return l.take()
}

func heapInUse() int64 { return int64(C.edge_heap_in_use()) }

// go-tflite v0.2.1 frees its C objects only through runtime.AddCleanup and
// exposes neither the C pointers nor a Delete method. To free explicitly we
// read two unexported fields by name through reflect, after checking their
// types, so a layout change in a future go-tflite fails loudly here instead of
// corrupting memory.
var cleanupType = reflect.TypeOf(runtime.Cleanup{})

// bindingFields locates the C pointer field and the cleanup handle of a
// go-tflite object.
func bindingFields(obj any, ptrField string) (ptr *unsafe.Pointer, cleanup *runtime.Cleanup, err error) {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil, nil, fmt.Errorf("%w: %T is not a non-nil pointer", ErrBinding, obj)
	}
	v = v.Elem()
	pf := v.FieldByName(ptrField)
	cf := v.FieldByName("cleanup")
	if !pf.IsValid() || (pf.Kind() != reflect.Pointer && pf.Kind() != reflect.UnsafePointer) || !cf.IsValid() || cf.Type() != cleanupType {
		return nil, nil, fmt.Errorf("%w: unexpected layout of %T (want fields %q and cleanup)", ErrBinding, obj, ptrField)
	}
	return (*unsafe.Pointer)(unsafe.Pointer(pf.UnsafeAddr())), (*runtime.Cleanup)(unsafe.Pointer(cf.UnsafeAddr())), nil
}

// cPointer returns the C object behind a go-tflite object without detaching it.
func cPointer(obj any, ptrField string) (unsafe.Pointer, error) {
	p, _, err := bindingFields(obj, ptrField)
	if err != nil {
		return nil, err
	}
	return *p, nil
}

// detach stops the GC cleanup of a go-tflite object and hands its C pointer
// to the caller, who must free it; the object is left holding nil.
// detachFn is detach; tests replace it to exercise the failure path.
var detachFn = detach

// leakOnce logs the first C object left allocated because it could not be
// detached; later ones are counted in Leaked.
var (
	leakOnce sync.Once
	leakN    atomic.Int64
)

func leaked(err error) {
	leakN.Add(1)
	leakOnce.Do(func() {
		slog.Error("tflite: a C object could not be detached from go-tflite; leaking it and what it references instead of freeing under it", "err", err)
	})
}

// Leaked is how many C objects were left allocated because freeing them
// was not safe.
func Leaked() int64 { return leakN.Load() }

func detach(obj any, ptrField string) (unsafe.Pointer, error) {
	p, cleanup, err := bindingFields(obj, ptrField)
	if err != nil {
		return nil, err
	}
	cleanup.Stop()
	c := *p
	*p = nil
	return c, nil
}

func freeModel(p unsafe.Pointer) {
	if p != nil {
		C.edge_model_delete(p)
	}
}

func freeOptions(p unsafe.Pointer) {
	if p != nil {
		C.edge_options_delete(p)
	}
}

func freeInterpreter(p unsafe.Pointer) {
	if p != nil {
		C.edge_interpreter_delete(p)
	}
}

func freeExternalDelegate(p unsafe.Pointer) {
	if p != nil {
		C.edge_external_delegate_delete(p)
	}
}

func setReporter(opts unsafe.Pointer, l errLog) { C.edge_set_reporter(opts, l.c) }

func freeC(p unsafe.Pointer) { C.free(p) }

// newExternalDelegate loads an external delegate library with its options.
// The caller frees the delegate after the interpreter.
func newExternalDelegate(lib string, options map[string]string) (unsafe.Pointer, error) {
	clib := C.CString(lib)
	defer C.free(unsafe.Pointer(clib))
	if reason := C.edge_plugin_check(clib); reason != nil {
		return nil, errors.New(C.GoString(reason))
	}
	var cstrs []*C.char
	cstr := func(s string) *C.char {
		p := C.CString(s)
		cstrs = append(cstrs, p)
		return p
	}
	defer func() {
		for _, p := range cstrs {
			C.free(unsafe.Pointer(p))
		}
	}()
	n := len(options)
	ptrSize := C.size_t(unsafe.Sizeof((*C.char)(nil)))
	keys := (**C.char)(C.calloc(C.size_t(n+1), ptrSize))
	values := (**C.char)(C.calloc(C.size_t(n+1), ptrSize))
	defer C.free(unsafe.Pointer(keys))
	defer C.free(unsafe.Pointer(values))
	ks := unsafe.Slice(keys, n+1)
	vs := unsafe.Slice(values, n+1)
	i := 0
	for k, v := range options {
		ks[i], vs[i] = cstr(k), cstr(v)
		i++
	}
	d := C.edge_external_delegate_new(clib, C.int(n), keys, values)
	if d == nil {
		return nil, errors.New("the plugin refused its options or created no delegate")
	}
	return d, nil
}

func addDelegate(opts, d unsafe.Pointer) { C.edge_options_add_delegate(opts, d) }
