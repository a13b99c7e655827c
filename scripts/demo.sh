#!/usr/bin/env bash
# Builds tasktree-run and runs its demo: a nightly backup plan for three hosts (snapshot, two
# replications in parallel, prune behind a barrier, monitor behind a nested one, one flaky job that
# succeeds on its retry). Installs missing Debian packages first. Extra arguments go to
# tasktree-run (try --dry-run, --dot, --workers 1 or --json report.json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset default >/dev/null
cmake --build --preset default --target tasktree-run
exec build/default/tools/tasktree-run/tasktree-run --demo "$@"
