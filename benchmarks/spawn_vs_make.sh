#!/usr/bin/env bash
# Process starts: tasktree-run against `make -j` and, if installed, GNU parallel, on N trivial
# jobs (`true`), the same number of workers, in the same run, interleaved. Also console output
# speed: one job printing `seq 1 LINES`, against the same command run directly and GNU parallel
# --line-buffer --tag. Prints min / median / max seconds of each and the ratios to make.
#
# Usage: benchmarks/spawn_vs_make.sh [N...]      (default: 5000 100000)
# Environment: REPS (default 3), WORKERS (default: nproc), LINES (default 5000000),
#              BUSY=K runs K CPU-bound processes beside it (a busy machine), TASKTREE_RUN (the
#              binary; default build/default/tools/tasktree-run/tasktree-run, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
tool=${TASKTREE_RUN:-build/default/tools/tasktree-run/tasktree-run}
if [ ! -x "$tool" ]; then
  cmake --preset default >/dev/null
  cmake --build --preset default --target tasktree-run >/dev/null
fi
reps=${REPS:-3}
workers=${WORKERS:-$(nproc)}
lines=${LINES:-5000000}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(5000 100000)
scratch=$(mktemp -d)
busy_pids=()
cleanup() {
  for pid in "${busy_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT
for _ in $(seq 1 "${BUSY:-0}"); do
  (while :; do :; done) &
  busy_pids+=($!)
done

# Seconds that "$@" takes, to 3 decimals.
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}
# min median max of the numbers given.
stats() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {printf "%.3f %.3f %.3f", v[1], v[int((NR+1)/2)], v[NR]}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

echo "machine: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), ${BUSY:-0} busy processes beside; workers $workers; $reps repetitions"
have_parallel=false
command -v parallel >/dev/null && parallel --version 2>/dev/null | grep -q GNU && have_parallel=true

for n in "${sizes[@]}"; do
  plan="$scratch/plan-$n.jobs"
  makefile="$scratch/Makefile-$n"
  list="$scratch/list-$n"
  : >"$plan"
  {
    printf 'all:'
    for i in $(seq 1 "$n"); do printf ' t%d' "$i"; done
    printf '\n.PHONY: all'
    for i in $(seq 1 "$n"); do printf ' t%d' "$i"; done
    printf '\n'
    for i in $(seq 1 "$n"); do printf 't%d:\n\t@true\n' "$i"; done
  } >"$makefile"
  for i in $(seq 1 "$n"); do printf 'job%d  true\n' "$i"; done >"$plan"
  for i in $(seq 1 "$n"); do echo true; done >"$list"
  tt=() mk=() gp=() ratio=()
  for _ in $(seq 1 "$reps"); do
    t=$(seconds "$tool" -j "$workers" "$plan")
    m=$(seconds make -s -j "$workers" -f "$makefile")
    tt+=("$t") mk+=("$m") ratio+=("$(echo "$t / $m" | bc -l)")
    # GNU parallel starts about 350 jobs a second: only the smaller sizes.
    if $have_parallel && [ "$n" -le 10000 ]; then gp+=("$(seconds parallel -j "$workers" :::: "$list")"); fi
  done
  echo "$n jobs of 'true': tasktree-run $(stats "${tt[@]}") s; make -j $(stats "${mk[@]}") s;" \
    "tasktree-run / make (per repetition) $(stats "${ratio[@]}")"
  if [ ${#gp[@]} -gt 0 ]; then echo "  GNU parallel $(stats "${gp[@]}") s"; fi
done

echo "seq 1 $lines" >"$scratch/lines.jobs"
sed -i 's/^/print  /' "$scratch/lines.jobs"
direct=() tt=() gp=()
for _ in $(seq 1 "$reps"); do
  direct+=("$(seconds seq 1 "$lines")")
  tt+=("$(seconds "$tool" "$scratch/lines.jobs")")
  if $have_parallel; then gp+=("$(seconds parallel --line-buffer --tag ::: "seq 1 $lines")"); fi
done
echo "output of seq 1 $lines: direct $(stats "${direct[@]}") s; tasktree-run $(stats "${tt[@]}") s"
if $have_parallel; then
  echo "  GNU parallel --line-buffer --tag $(stats "${gp[@]}") s; tasktree-run / parallel (medians)" \
    "$(echo "$(median "${tt[@]}") / $(median "${gp[@]}")" | bc -l | cut -c1-5)"
fi
