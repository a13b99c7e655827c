#!/bin/bash
# Drives tests/test_mpi_launcher.cpp's signal scenario: SIGTERM to a running mpiexec stops the run gracefully on every
# rank. Usage: mpi_signal.sh RANKS EXECUTABLE MPIEXEC [MPIEXEC FLAGS...]
set -u
ranks=$1 executable=$2
shift 2
work=$(mktemp -d "${TMPDIR:-/tmp}/tasktree-mpi-signal.XXXXXX")
trap 'rm -rf "$work"' EXIT
marker=$work/running

# Open MPI passes SIGTERM on to the ranks after odls_base_sigkill_timeout seconds and SIGKILLs
# them as long again: 3 s gives the ranks time to stop even under a sanitizer.
"$@" -n "$ranks" --mca odls_base_sigkill_timeout 3 "$executable" signal "$marker" > "$work/out" 2>&1 &
launcher=$!
for _ in $(seq 1 600); do
  [ -e "$marker" ] && break
  kill -0 "$launcher" 2> /dev/null || break
  sleep 0.1
done
if [ ! -e "$marker" ]; then
  cat "$work/out"
  echo "FAILED: the run never started (no $marker)"
  kill -KILL "$launcher" 2> /dev/null
  exit 1
fi
kill -TERM "$launcher"
wait "$launcher"
status=$?
cat "$work/out"
echo "mpiexec exited with status $status"
failed=0
for ((rank = 0; rank < ranks; ++rank)); do
  if ! grep -q "^rank $rank returned: failed true" "$work/out"; then
    echo "FAILED: rank $rank did not return from the stopped run"
    failed=1
  fi
done
grep -q "^signal test: passed" "$work/out" || { echo "FAILED: rank 0's checks"; failed=1; }
if grep -q "^FAILED" "$work/out"; then failed=1; fi
[ $failed = 0 ] && echo "mpi signal test: passed"
exit $failed
