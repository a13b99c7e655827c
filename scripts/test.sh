#!/usr/bin/env bash
# Builds and runs every test of tasktree, in five configurations, each a CMake workflow preset
# (CMakePresets.json; the README has a table of them):
#   default  GCC, release with debug info, warnings as errors; also the API reference (Doxygen,
#            warnings are errors) and the package tests (install, pkg-config, the Debian package)
#   clang    Clang, the same build without the API reference; no package tests
#   asan     GCC with AddressSanitizer + UndefinedBehaviorSanitizer: the tests and tasktree-run
#   tsan     GCC with ThreadSanitizer: the tests and tasktree-run
#   fuzz     Clang with libFuzzer + ASan + UBSan: fuzzes the scheduler against the reference model
#            for a bounded time (TASKTREE_FUZZ_SECONDS, default 30)
# Tests run two at a time, the longest first (ctest COST, tests/CMakeLists.txt). Installs missing Debian packages first. For the inner loop while
# changing the code, `cmake --workflow --preset dev` is quicker.
# Usage: scripts/test.sh [preset...]   (default: all five)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(default clang asan tsan fuzz)
times=()
for preset in "${presets[@]}"; do
  echo "=== workflow preset: $preset ==="
  start=$SECONDS
  cmake --workflow --preset "$preset"
  times+=("$preset $((SECONDS - start))s")
done
echo "=== all test workflows passed; wall time per preset: ${times[*]} ==="
