#!/usr/bin/env bash
# The scale-out's efficiency table (docs/scale-out.md): examples/mpi_bench.cpp at 1, 2, 4 and 8 ranks
# on this machine, for jobs of 0 µs, 1 ms and 10 ms, with queue_ahead 0 and with each value given,
# REPS repetitions of each (interleaved: every configuration once, then again), on an idle machine
# and then with BUSY CPU-bound processes beside it. Prints one Markdown table per machine state:
# wall time and efficiency (against the ideal from the jobs' measured sleeps) as min / median / max,
# and the median jobs/s.
#
#   benchmarks/mpi_scaling.sh [BENCH] [REPS] [AHEAD...] [BUSY]
#
# BENCH defaults to build/default/examples/example_mpi_bench (cmake --build --preset default
# --target example_mpi_bench), REPS to 3, AHEAD (space-separated, one argument) to "1 64", BUSY to 2.
set -euo pipefail

bench=${1:-build/default/examples/example_mpi_bench}
reps=${2:-3}
read -r -a aheads <<<"0 ${3:-1 64}"
busy=${4:-2}
[[ -x $bench ]] || { echo "mpi_scaling.sh: no benchmark at $bench (build the example_mpi_bench target)" >&2; exit 2; }
for value in "$reps" "${aheads[@]}" "$busy"; do
  [[ $value =~ ^[0-9]+$ ]] || { echo "mpi_scaling.sh: invalid count '$value'" >&2; exit 2; }
done
launcher=(mpiexec --oversubscribe)
[[ $(id -u) == 0 ]] && launcher+=(--allow-run-as-root)

# ranks, jobs, sleep in µs
configs=("1 20000 0" "1 2000 1000" "1 600 10000"
         "2 20000 0" "2 2000 1000" "2 600 10000"
         "4 20000 0" "4 2000 1000" "4 600 10000"
         "8 20000 0" "8 2000 1000" "8 600 10000")

run_table() {
  local out
  out=$(mktemp)
  for ((rep = 0; rep < reps; ++rep)); do
    for config in "${configs[@]}"; do
      read -r np jobs sleep_us <<<"$config"
      for k in "${aheads[@]}"; do
        [[ $np == 1 && $k != 0 ]] && continue  # one rank: nothing is sent
        row=$("${launcher[@]}" -n "$np" "$bench" --jobs "$jobs" --sleep-us "$sleep_us" --queue-ahead "$k")
        # | ranks | slots | jobs | t | wall | ideal | eff | ideal (measured) | eff (measured) | overhead | jobs/s |
        echo "$np $sleep_us $k $row" >>"$out"
      done
    done
  done
  echo "| ranks | queue_ahead | slots | t | wall min / median / max | efficiency (measured ideal) min / median / max | jobs/s, median |"
  echo "|---|---|---|---|---|---|---|"
  for config in "${configs[@]}"; do
    read -r np jobs sleep_us <<<"$config"
    for k in "${aheads[@]}"; do
      [[ $np == 1 && $k != 0 ]] && continue
      awk -v np="$np" -v t="$sleep_us" -v k="$k" -F'|' '
        function sort(a, n,   i, j, x) { for (i = 2; i <= n; ++i) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; --j) a[j + 1] = a[j]; a[j + 1] = x } }
        { split($1, key, " "); if (key[1] != np || key[2] != t || key[3] != k) next
          ++n; slots = $3 + 0; wall[n] = $6 + 0; eff[n] = $10 + 0; rate[n] = $12 + 0 }
        END {
          sort(wall, n); sort(eff, n); sort(rate, n); m = int((n + 1) / 2)
          printf "| %d | %d | %d | %d µs | %.3f / %.3f / %.3f s | %.1f / %.1f / %.1f%% | %d |\n",
                 np, k, slots, t, wall[1], wall[m], wall[n], eff[1], eff[m], eff[n], rate[m]
        }' "$out"
    done
  done
  rm -f "$out"
}

echo "Idle, $reps repetitions:"
echo
run_table
echo
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for ((i = 0; i < busy; ++i)); do
  (while :; do :; done) &
  pids+=($!)
done
echo "With $busy CPU-bound processes beside it, $reps repetitions:"
echo
run_table
