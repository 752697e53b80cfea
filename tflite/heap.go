package tflite

/*
#include <malloc.h>

static void edge_malloc_trim(void) { malloc_trim(0); }
static int edge_arena_max(int n) { return mallopt(M_ARENA_MAX, n); }
*/
import "C"

// ReleaseHeap gives the C heap's free pages back to the kernel (glibc
// malloc_trim). Without it the arenas and repacked weights an eviction
// freed stay in the process's RSS, which is what MemoryMax= and the OOM
// killer count, although the pool no longer accounts them.
func ReleaseHeap() { C.edge_malloc_trim() }

// LimitArenas caps glibc's malloc arenas at n (M_ARENA_MAX). glibc makes up
// to 8 per core, one per thread that contends; TFLite's worker threads
// then leave freed memory stranded in arenas that malloc_trim cannot
// shrink below their top chunk. Call it once, early; it reports whether
// glibc took the setting.
func LimitArenas(n int) bool { return C.edge_arena_max(C.int(n)) == 1 }
