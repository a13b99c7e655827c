#!/usr/bin/env bash
# Builds and runs tasktree's demo: a generated tree of 100,000 ZFS-like datasets run on a thread
# pool, with a short report. Installs missing Debian packages first. Extra arguments go to the
# demo (try --datasets 1000000 or --workers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset default >/dev/null
cmake --build --preset default --target demo
exec build/default/examples/demo "$@"
