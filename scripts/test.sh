#!/usr/bin/env bash
# Builds and runs every test of tasktree, in five configurations, each a CMake workflow preset:
#   default  GCC, release with debug info, warnings as errors
#   clang    Clang, the same
#   asan     GCC with AddressSanitizer + UndefinedBehaviorSanitizer
#   tsan     GCC with ThreadSanitizer
#   fuzz     Clang with libFuzzer + ASan + UBSan: fuzzes the scheduler against the reference model
#            for a bounded time (TASKTREE_FUZZ_SECONDS, default 60)
# Installs missing Debian packages first.
# Usage: scripts/test.sh [preset...]   (default: all five)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(default clang asan tsan fuzz)
for preset in "${presets[@]}"; do
  echo "=== workflow preset: $preset ==="
  cmake --workflow --preset "$preset"
done
echo "=== all test workflows passed: ${presets[*]} ==="
