// A real TFLite external-delegate plugin for tests. It claims no nodes, so
// the CPU runs the graph. With EDGE_TEST_DELEGATE_MARKER set it writes that
// file on entry; with EDGE_TEST_DELEGATE_HANG set it then never returns,
// so a test can kill the process inside the delegate.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <tensorflow/lite/c/common.h>

static TfLiteStatus prepare(TfLiteContext* context, TfLiteDelegate* delegate) {
	(void)context;
	(void)delegate;
	return kTfLiteOk;
}

TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n, void (*report_error)(const char*)) {
	(void)keys; (void)values; (void)n; (void)report_error;
	const char* marker = getenv("EDGE_TEST_DELEGATE_MARKER");
	if (marker != NULL) {
		FILE* f = fopen(marker, "w");
		if (f != NULL) {
			fputs("inside the delegate\n", f);
			fclose(f);
		}
	}
	if (getenv("EDGE_TEST_DELEGATE_HANG") != NULL) {
		for (;;) pause();
	}
	TfLiteDelegate* d = calloc(1, sizeof(TfLiteDelegate));
	if (d == NULL) return NULL;
	d->Prepare = prepare;
	d->flags = kTfLiteDelegateFlagsNone;
	return d;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) { free(delegate); }
