# Runtime package resolution for provision-runtime.sh (sourced, not run).
# Kept apart so scripts_test.go can drive it with stand-in package lists.
#
# The caller defines two functions:
#   suite_packages SUITE      print the package names SUITE carries
#   try_runtime SUITE PKG     fetch PKG from SUITE into the work area and
#                             succeed only if its library exports the C API

# runtime_candidates reads package names and prints the TFLite runtime
# libraries among them (libtensorflow-lite2.X[.Y…], not -dev or -dbgsym),
# newest version first.
runtime_candidates() {
  grep -E '^libtensorflow-lite2(\.[0-9]+)+$' | sort -u | sort -t. -k2,2nr -k3,3nr -k4,4nr || true
}

# exports_c_api LIB succeeds when the shared library LIB exports the TFLite
# C API that go-tflite links against.
exports_c_api() {
  local lib=$1 sym
  for sym in TfLiteModelCreate TfLiteInterpreterCreate TfLiteInterpreterInvoke TfLiteInterpreterResetVariableTensors; do
    readelf --dyn-syms --wide "$lib" 2>/dev/null | awk -v s="$sym" '$5 == "GLOBAL" && $7 != "UND" && $8 == s { f = 1 } END { exit !f }' || return 1
  done
}

# resolve_runtime SUITE... tries each suite in order and, within a suite,
# each runtime package newest first; it prints "SUITE PACKAGE" for the first
# that try_runtime accepts. With none it names the way out and fails.
resolve_runtime() {
  local suite pkg tried=()
  for suite in "$@"; do
    while read -r pkg; do
      [[ -n $pkg ]] || continue
      tried+=("$suite/$pkg")
      if try_runtime "$suite" "$pkg"; then
        echo "$suite $pkg"
        return 0
      fi
    done < <(suite_packages "$suite" | runtime_candidates)
  done
  {
    echo "provision-runtime: no libtensorflow-lite2.* exporting the TFLite C API in suites: $*"
    [[ ${#tried[@]} -gt 0 ]] && echo "  tried: ${tried[*]}"
    echo "  Use your own runtime instead: set TFLITE_LIB_DIR (the directory with libtensorflowlite_c.so)"
    echo "  and TFLITE_INCLUDE_DIR (the directory above tensorflow/lite/c/c_api.h), e.g."
    echo "  make test TFLITE_LIB_DIR=/usr/local/lib TFLITE_INCLUDE_DIR=/usr/local/include"
  } >&2
  return 1
}
