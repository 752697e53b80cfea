package tflite

/*
#include <malloc.h>
#include <stdlib.h>

static void edge_malloc_trim(void) { malloc_trim(0); }

// Runs when the program is loaded, before the Go runtime starts threads:
// glibc makes up to 8 malloc arenas per core, one per thread that
// contends, and TFLite's worker threads then leave freed memory stranded in
// arenas malloc_trim cannot shrink. Two arenas hold the soak test's peak
// RSS at 37-39 MiB instead of 43-46 (the same figures as MALLOC_ARENA_MAX=2;
// a mallopt once Go runs comes too late). The environment's own setting wins.
__attribute__((constructor)) static void edge_limit_arenas(void) {
	if (getenv("MALLOC_ARENA_MAX") == NULL && getenv("GLIBC_TUNABLES") == NULL) {
		mallopt(M_ARENA_MAX, 2);
	}
}
*/
import "C"

// ReleaseHeap gives the C heap's free pages back to the kernel (glibc
// malloc_trim). Without it the arenas and repacked weights an eviction
// freed stay in the process's RSS, which is what MemoryMax= and the OOM
// killer count, although the pool no longer accounts them.
func ReleaseHeap() { C.edge_malloc_trim() }
